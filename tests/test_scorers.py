"""Tests for the anomaly-detection scorers of skpatch.metrics."""

import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.metrics import get_scorer
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from skpatch.metrics import (
    aupro,
    aupro_scorer,
    f1_max,
    f1_max_scorer,
    get_anomaly_scorer,
    image_auroc,
    image_auroc_scorer,
    make_anomaly_scorer,
    pixel_auroc,
    pixel_auroc_scorer,
)

# ---------------------------------------------------------------------------
# Stub estimators following skpatch's sign convention (higher = more normal)
# ---------------------------------------------------------------------------


class StubClassifier(OutlierMixin, BaseEstimator):
    """Image-level detector whose anomaly score is the first feature.

    ``flip=True`` makes it rank backwards, a dummy parameter to search over.
    """

    def __init__(self, flip=False):
        self.flip = flip

    def fit(self, X, y=None):
        self.offset_ = -0.5
        return self

    def score_samples(self, X):
        anomaly = np.asarray(X, dtype=float)[:, 0]
        return anomaly if self.flip else -anomaly

    def decision_function(self, X):
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        return np.where(self.decision_function(X) < 0, -1, 1)


class StubSegmenter(OutlierMixin, BaseEstimator):
    """Pixel-level detector whose anomaly map is the image itself."""

    def __init__(self, flip=False):
        self.flip = flip

    def fit(self, X, y=None):
        return self

    def score_samples(self, X):
        anomaly = np.asarray(X, dtype=float)
        return anomaly if self.flip else -anomaly


class FixedScores:
    """No fit at all: returns the given scores whatever X is."""

    def __init__(self, scores):
        self.scores = scores

    def score_samples(self, X):
        return self.scores


def image_data(n=24, seed=0):
    """Features whose first column separates defects (1) imperfectly."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    X = rng.normal(size=(n, 3))
    X[:, 0] += 1.5 * y
    return X, y


def segmentation_data(n=12, side=8, seed=0):
    """Noisy images brighter on the defects; every odd image is defective."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), dtype=np.uint8)
    for i in range(1, n, 2):
        row, col = rng.integers(0, side - 3, size=2)
        masks[i, row : row + rng.integers(1, 4), col : col + rng.integers(1, 4)] = 1
    X = 0.5 * rng.normal(size=masks.shape) + 2.0 * masks
    return X, masks


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def test_image_auroc_scorer_negates_score_samples():
    X, y = image_data()
    estimator = StubClassifier().fit(X)
    assert image_auroc_scorer(estimator, X, y) == image_auroc(y, X[:, 0])


def test_image_auroc_scorer_reduces_maps_by_max():
    X, masks = segmentation_data()
    labels = masks.any(axis=(1, 2)).astype(int)
    expected = image_auroc(labels, X.max(axis=(1, 2)))
    assert image_auroc_scorer(StubSegmenter(), X, labels) == expected
    # Masks as y stand for "is any pixel defective".
    assert image_auroc_scorer(StubSegmenter(), X, masks) == expected


def test_pixel_scorers_match_metrics():
    X, masks = segmentation_data()
    segmenter = StubSegmenter()
    assert pixel_auroc_scorer(segmenter, X, masks) == pixel_auroc(masks, X)
    assert aupro_scorer(segmenter, X, masks) == aupro(masks, X)


def test_f1_max_scorer_on_labels_and_masks():
    X, y = image_data()
    assert f1_max_scorer(StubClassifier(), X, y) == f1_max(y, X[:, 0])
    X, masks = segmentation_data()
    assert f1_max_scorer(StubSegmenter(), X, masks) == f1_max(masks, X)


def test_scorers_return_python_floats():
    X, masks = segmentation_data()
    for scorer in (image_auroc_scorer, pixel_auroc_scorer, aupro_scorer, f1_max_scorer):
        assert type(scorer(StubSegmenter(), X, masks)) is float


def test_scorer_forwards_metric_kwargs():
    X, masks = segmentation_data()
    scorer = make_anomaly_scorer(aupro, level="pixel", fpr_limit=0.05)
    assert scorer(StubSegmenter(), X, masks) == aupro(masks, X, fpr_limit=0.05)
    assert scorer(StubSegmenter(), X, masks) != aupro(masks, X)


def test_unsigned_scores_are_negated_without_wrapping():
    # -uint8(1) would be 255: the scorer must go through floats.
    y = np.array([0, 1, 0, 1])
    normality = np.array([3, 1, 2, 0], dtype=np.uint8)
    assert image_auroc_scorer(FixedScores(normality), None, y) == 1.0


def test_scorers_on_lists():
    # Ground truth and scores given as lists.
    scorer = make_anomaly_scorer(image_auroc)
    assert scorer(FixedScores([-0.1, -0.9, -0.2]), None, [0, 1, 0]) == 1.0


# ---------------------------------------------------------------------------
# The scoring="roc_auc" pitfall
# ---------------------------------------------------------------------------


def test_roc_auc_string_gives_one_minus_auroc_for_outlier_detectors():
    # scikit-learn's "roc_auc" ranks by decision_function, higher = normal,
    # so with y where 1 = anomaly it reports 1 - AUROC.
    X, y = image_data()
    estimator = StubClassifier().fit(X)
    ours = image_auroc_scorer(estimator, X, y)
    assert ours > 0.5
    assert get_scorer("roc_auc")(estimator, X, y) == pytest.approx(1 - ours)

    cv = KFold(3)
    sklearn_scores = cross_val_score(StubClassifier(), X, y, cv=cv, scoring="roc_auc")
    our_scores = cross_val_score(StubClassifier(), X, y, cv=cv, scoring=image_auroc_scorer)
    np.testing.assert_allclose(sklearn_scores, 1 - our_scores)


def test_grid_search_picks_the_right_direction_only_with_our_scorer():
    X, y = image_data()
    grid = {"flip": [True, False]}
    ours = GridSearchCV(StubClassifier(), grid, scoring=image_auroc_scorer, cv=KFold(3))
    ours.fit(X, y)
    assert ours.best_params_ == {"flip": False}
    assert ours.best_score_ > 0.5
    # The pitfall: "roc_auc" selects the detector that ranks backwards.
    pitfall = GridSearchCV(StubClassifier(), grid, scoring="roc_auc", cv=KFold(3))
    pitfall.fit(X, y)
    assert pitfall.best_params_ == {"flip": True}


# ---------------------------------------------------------------------------
# Model selection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scorer", [image_auroc_scorer, pixel_auroc_scorer, aupro_scorer, f1_max_scorer]
)
def test_cross_val_score_with_a_segmenter(scorer):
    X, masks = segmentation_data()
    cv = KFold(3)
    scores = cross_val_score(StubSegmenter(), X, masks, cv=cv, scoring=scorer)
    expected = [
        scorer(StubSegmenter(), X[test], masks[test]) for _, test in cv.split(X)
    ]
    np.testing.assert_allclose(scores, expected)
    assert np.all(scores > 0.5)


def test_grid_search_with_several_scorers_and_masks():
    X, masks = segmentation_data()
    scoring = {name: get_anomaly_scorer(name) for name in ("image_auroc", "pixel_auroc", "aupro")}
    search = GridSearchCV(
        StubSegmenter(), {"flip": [True, False]}, scoring=scoring, refit="aupro", cv=KFold(3)
    )
    search.fit(X, masks)
    assert search.best_params_ == {"flip": False}
    for name in scoring:
        flipped, unflipped = search.cv_results_[f"mean_test_{name}"]
        assert flipped < 0.9 < unflipped


def test_cross_val_score_on_a_classifier_with_f1_max():
    X, y = image_data()
    scores = cross_val_score(StubClassifier(), X, y, cv=KFold(4), scoring=f1_max_scorer)
    assert scores.shape == (4,)
    assert np.all((0 < scores) & (scores <= 1))


# ---------------------------------------------------------------------------
# Errors, repr, lookup
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scorer", [pixel_auroc_scorer, aupro_scorer, f1_max_scorer])
def test_pixel_scorers_need_a_segmenter(scorer):
    X, y = image_data()
    masks = np.zeros((len(X), 4, 4))
    with pytest.raises(ValueError, match="needs a segmenter.*StubClassifier"):
        scorer(StubClassifier(), X, masks)


def test_scorer_needs_y():
    X, _ = image_data()
    with pytest.raises(ValueError, match="ground truth y"):
        image_auroc_scorer(StubClassifier(), X, None)


def test_scorer_needs_score_samples():
    class NoScores:
        pass

    with pytest.raises(TypeError, match="score_samples.*NoScores"):
        image_auroc_scorer(NoScores(), np.zeros((2, 1)), [0, 1])


def test_scorer_reports_metric_errors():
    # Labels in the outlier convention (-1 = outlier) are not guessed.
    X, y = image_data()
    with pytest.raises(ValueError, match="y == -1"):
        image_auroc_scorer(StubClassifier(), X, np.where(y == 1, -1, 1))


@pytest.mark.parametrize(
    ("scorer", "expected"),
    [
        (image_auroc_scorer, "make_anomaly_scorer(image_auroc)"),
        (pixel_auroc_scorer, "make_anomaly_scorer(pixel_auroc, level='pixel')"),
        (aupro_scorer, "make_anomaly_scorer(aupro, level='pixel')"),
        (f1_max_scorer, "make_anomaly_scorer(f1_max, level='auto')"),
        (
            make_anomaly_scorer(aupro, level="pixel", fpr_limit=0.05),
            "make_anomaly_scorer(aupro, level='pixel', fpr_limit=0.05)",
        ),
    ],
)
def test_scorer_repr(scorer, expected):
    assert repr(scorer) == expected


def test_make_anomaly_scorer_validates_arguments():
    with pytest.raises(ValueError, match="level"):
        make_anomaly_scorer(image_auroc, level="region")
    with pytest.raises(ValueError, match="metric"):
        make_anomaly_scorer("image_auroc")


def test_make_anomaly_scorer_with_any_metric():
    def mean_anomaly_gap(y_true, y_score):
        y_true, y_score = np.asarray(y_true, bool), np.asarray(y_score)
        return y_score[y_true].mean() - y_score[~y_true].mean()

    X, y = image_data()
    scorer = make_anomaly_scorer(mean_anomaly_gap)
    assert repr(scorer) == "make_anomaly_scorer(mean_anomaly_gap)"
    assert scorer(StubClassifier(), X, y) == pytest.approx(mean_anomaly_gap(y, X[:, 0]))


@pytest.mark.parametrize(
    ("name", "scorer"),
    [
        ("image_auroc", image_auroc_scorer),
        ("pixel_auroc", pixel_auroc_scorer),
        ("aupro", aupro_scorer),
        ("f1_max", f1_max_scorer),
    ],
)
def test_get_anomaly_scorer(name, scorer):
    found = get_anomaly_scorer(name)
    assert repr(found) == repr(scorer)
    X, masks = segmentation_data()
    assert found(StubSegmenter(), X, masks) == scorer(StubSegmenter(), X, masks)


@pytest.mark.parametrize("name", ["roc_auc", "AUPRO", None, ["aupro"]])
def test_get_anomaly_scorer_lists_valid_names(name):
    expected = "valid names are 'aupro', 'f1_max', 'image_auroc', 'pixel_auroc'"
    with pytest.raises(ValueError, match=expected):
        get_anomaly_scorer(name)


@pytest.mark.parametrize(
    "scorer", [image_auroc_scorer, pixel_auroc_scorer, aupro_scorer, f1_max_scorer]
)
def test_scorers_pickle(scorer):
    # Needed to run model selection with n_jobs > 1.
    restored = pickle.loads(pickle.dumps(scorer))
    X, masks = segmentation_data()
    assert restored(StubSegmenter(), X, masks) == scorer(StubSegmenter(), X, masks)
