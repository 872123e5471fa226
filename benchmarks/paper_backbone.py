"""The default classifier with the papers' backbone, wide_resnet50_2: fit and scoring time.

Issue #29 compares skpatch with anomalib 2.7.0's Patchcore on MVTec AD bottle
under the same settings: wide_resnet50_2 (random weights here: the same
compute, and nothing to download), 224 px centre crops of the 256 px images,
a 10% coreset, batches of 32. Its targets, on the 2-core machine with nothing
else running: scoring the 83 test images in at most 6.6 s, a 50-image fit in
at most 7.5 s.

For each featurizer engine (``auto``, the default: onnxruntime where it is
installed; ``torch``) this times, in one process:

* ``fit`` of ``SoftPatchClassifier`` on the first ``--n-fit`` training images
  (arrays of 224 px crops, decoded beforehand), split into the engine's
  one-off setup (the onnxruntime export), the CNN and the rest (denoise,
  coreset, the held-out scores that set ``offset_``);
* ``score_samples`` of the 83 test crops, split into CNN (+ pooling),
  search and the rest.

The decoding of the PNG files and the crop are timed once, apart (the
crops are arrays when timed, as anomalib's loader decodes ahead). timm,
torchvision and onnxruntime are imported before any timing (importing timm
takes seconds in a fresh process, once).

Run from the repository root::

    python benchmarks/paper_backbone.py                # auto, then torch
    python benchmarks/paper_backbone.py --engines auto --n-fit 50
"""

import argparse
import glob
import importlib.util
import os
import sys
import time
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BOTTLE = os.path.join(ROOT, os.pardir, "shared", "data", "mvtec_ad_bottle")


def _engines_module():
    spec = importlib.util.spec_from_file_location("engines", os.path.join(ROOT, "benchmarks", "engines.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_crops(paths, size):
    """Decoded RGB arrays of the ``size`` x ``size`` centre of each image."""
    from PIL import Image

    crops = []
    for path in paths:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
        crops.append(array[top : top + size, left : left + size])
    return np.stack(crops)


def classifier(engine, size, batch_size):
    from skpatch import SoftPatchClassifier

    return SoftPatchClassifier(random_state=0).set_params(
        featurizer__backbone="wide_resnet50_2", featurizer__weights=None, featurizer__image_size=size,
        featurizer__batch_size=batch_size, featurizer__engine=engine, memory__sampling_ratio=0.1,
    )


def timed_fit_and_score(engine, train, test, args, timers_cls):
    """(fit seconds, fit stages, score seconds, score stages, scores) for one engine."""
    import skpatch._featurizer as featurizer_module
    from skpatch import PatchFeaturizer, WeightedCoreset

    saved = (
        PatchFeaturizer._maps, PatchFeaturizer._onnxruntime_features, featurizer_module.feature_session,
        WeightedCoreset.score_samples, WeightedCoreset.min_score_samples, WeightedCoreset.score_held_out,
    )
    results = []
    try:
        for phase in ("fit", "score"):
            timers = timers_cls()
            PatchFeaturizer._maps = timers.wrap("CNN", saved[0])
            PatchFeaturizer._onnxruntime_features = timers.wrap("CNN", saved[1])
            featurizer_module.feature_session = timers.wrap("engine setup", saved[2])
            WeightedCoreset.score_samples = timers.wrap("search", saved[3])
            WeightedCoreset.min_score_samples = timers.wrap("search", saved[4])
            WeightedCoreset.score_held_out = timers.wrap("search", saved[5])
            start = time.perf_counter()
            if phase == "fit":
                model = classifier(engine, args.size, args.batch_size).fit(train)
            else:
                scores = model.score_samples(test)
            total = time.perf_counter() - start
            stages = dict(timers.seconds)
            stages["other"] = total - sum(stages.values())
            results += [total, stages]
    finally:
        (
            PatchFeaturizer._maps, PatchFeaturizer._onnxruntime_features, featurizer_module.feature_session,
            WeightedCoreset.score_samples, WeightedCoreset.min_score_samples, WeightedCoreset.score_held_out,
        ) = saved
    return (*results, scores)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=BOTTLE, help="an MVTec AD category folder (default: bottle)")
    parser.add_argument("--engines", nargs="+", default=["auto", "torch"], choices=["auto", "torch", "onnxruntime"])
    parser.add_argument("--n-fit", type=int, default=50)
    parser.add_argument("--size", type=int, default=224, help="centre crop side, px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.pop("SKPATCH_ENGINE", None)
    torch.set_num_threads(args.threads)
    engines = _engines_module()
    timers_cls = engines._Timers
    engines.warm_imports()
    train_paths = sorted(glob.glob(os.path.join(args.data_root, "train", "good", "*.png")))[: args.n_fit]
    test_paths = sorted(glob.glob(os.path.join(args.data_root, "test", "*", "*.png")))
    if not train_paths or not test_paths:
        sys.exit(f"no MVTec images under {args.data_root!r}")
    start = time.perf_counter()
    train, test = load_crops(train_paths, args.size), load_crops(test_paths, args.size)
    decode = time.perf_counter() - start
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} threads, load average at start "
        f"{load:.2f}. wide_resnet50_2 (random weights), {args.size} px centre crops of "
        f"{os.path.basename(os.path.normpath(args.data_root))}, batches of {args.batch_size}, 10% coreset, "
        f"default SoftPatchClassifier otherwise. Decoding and cropping the {len(train) + len(test)} PNG "
        f"files: {decode:.1f} s ({1e3 * decode / (len(train) + len(test)):.1f} ms/image), not in the times below.",
    )
    print()
    print("| engine | phase | images | seconds | CNN s | engine setup s | search s | other s |")
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    for engine in args.engines:
        fit_s, fit_stages, score_s, score_stages, scores = timed_fit_and_score(engine, train, test, args, timers_cls)
        for phase, n, seconds, stages in (("fit", len(train), fit_s, fit_stages), ("score", len(test), score_s, score_stages)):
            cells = [f"{stages.get(k, 0.0):.2f}" for k in ("CNN", "engine setup", "search", "other")]
            print(f"| {engine} | {phase} | {n} | {seconds:.2f} | " + " | ".join(cells) + " |", flush=True)
        if reference is None:
            reference = scores
        else:
            diff = np.abs(scores - reference).max() / np.abs(reference).max()
            print(f"<!-- {engine}: max relative score difference to {args.engines[0]}: {diff:.1e} -->")
    print()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
