"""End to end on the real MVTec AD bottle images (skipped when absent)."""

import os

import numpy as np
import pytest

from .conftest import BOTTLE

pytestmark = [
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(BOTTLE), reason="MVTec AD bottle data not available"),
]


def test_bottle_image_auroc():
    from skpatch import SoftPatchClassifier
    from skpatch.datasets import load_mvtec
    from skpatch.metrics import image_auroc

    data = load_mvtec(BOTTLE)
    clf = SoftPatchClassifier(random_state=0).fit(data.train_images)
    scores = clf.score_samples(data.test_images)
    assert image_auroc(data.test_labels, -scores) >= 0.98
    assert np.mean(clf.predict(data.test_images)[data.test_labels == 1] == -1) > 0.8
