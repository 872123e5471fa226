import os

import numpy as np
import pytest
import torch

# Keep the suite light on the 2-core CI machine and make timings irrelevant.
torch.set_num_threads(min(2, torch.get_num_threads()))
# PatchFeaturizer(engine="auto") would export every test's small CNN to
# onnxruntime (about a second each) where onnxruntime is installed: the
# suite's estimators run torch, and the tests of "auto" unset this
# (tests/test_onnx.py). Spawned Dask workers inherit it.
os.environ.setdefault("SKPATCH_ENGINE", "torch")

BOTTLE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data", "mvtec_ad_bottle")


@pytest.fixture(scope="session")
def defect_data():
    """Small object-like images with planted defects and exact masks."""
    from skpatch.datasets import make_defects

    X, y, masks = make_defects(40, image_size=64, kind="object", defect_ratio=0.5, random_state=0)
    return X, y, masks


@pytest.fixture
def rng():
    return np.random.default_rng(0)
