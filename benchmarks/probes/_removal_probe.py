"""What the removal probes share: their command line, the overlap splits they
loop over, and the public classifier fitted and scored on one split.

``removal_cut.py``, ``removal_dilation.py``, ``removal_relative.py`` and
``removal_vouch.py`` each print one line per data set, seed and noise level:
``name seed noise`` and their cells. The data sets and their parameters come from
``benchmarks/noise_robustness.py``, which each probe puts on ``sys.path``.
"""

import argparse
import tempfile

import numpy as np


def parser(description, *, noise=(0.0, 0.2, 0.4)):
    """The probes' common options; each adds its own."""
    out = argparse.ArgumentParser(description=description)
    out.add_argument("--datasets", nargs="+", default=["hard_logical", "hard_surface"])
    out.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    out.add_argument("--noise", type=float, nargs="+", default=list(noise))
    out.add_argument("--cache", default=None, help="joblib cache folder (default: a temporary one)")
    out.add_argument("--n-train", type=int, default=60)
    out.add_argument("--n-test", type=int, default=60)
    out.add_argument("--image-size", type=int, default=128)
    return out


class Split:
    """One overlap split of a synthetic data set (``make_noisy_split``)."""

    def __init__(self, name, seed, noise, data, cache):
        from skpatch.datasets import make_noisy_split

        self.name, self.seed, self.cache = name, seed, cache
        self.split = make_noisy_split(data, noise, overlap=True, random_state=seed)
        self.labels = np.asarray(self.split.test_labels, dtype=int)

    def fit(self, **params):
        """``SoftPatchClassifier`` with ``params`` fitted on the training images."""
        import noise_robustness as nr

        from skpatch import SoftPatchClassifier

        est = SoftPatchClassifier(random_state=self.seed, cache=self.cache)
        return est.set_params(**nr.DATASET_PARAMS[self.name], **params).fit(self.split.train_images)

    def auroc(self, estimator):
        """Image AUROC of a fitted estimator on the test images."""
        from sklearn.metrics import roc_auc_score

        return roc_auc_score(self.labels, -estimator.score_samples(self.split.test_images))


def run(args, cells):
    """Print ``name seed noise`` and ``cells(split)`` for every split of ``args``."""
    import noise_robustness as nr

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            for seed in args.seeds:
                data = nr.synthetic_dataset(name, seed, args)
                for noise in args.noise:
                    split = Split(name, seed, noise, data, args.cache or tmp)
                    print(f"{name} {seed} {noise} " + " ".join(cells(split)), flush=True)
    return 0
