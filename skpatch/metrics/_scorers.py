"""Scorers to select anomaly detectors with scikit-learn's model selection tools.

A scorer is a callable ``scorer(estimator, X, y)`` returning a float where
greater is better, usable as ``scoring=`` in
:class:`~sklearn.model_selection.GridSearchCV`,
:func:`~sklearn.model_selection.cross_val_score` and friends.

skpatch estimators follow scikit-learn's outlier-detector sign convention:
``score_samples(X)`` is **higher for more normal** samples, per image for a
classifier (shape ``(n_images,)``) or per pixel for a segmenter (shape
``(n_images, height, width)``). Ground truth, on the other hand, uses
**1 = defective**. The scorers here negate ``score_samples`` to get anomaly
scores, then call a metric such as :func:`image_auroc`.

.. warning::
   Do not use ``scoring="roc_auc"`` (or ``"average_precision"``) with ``y``
   where 1 = anomaly. scikit-learn ranks outlier detectors by
   ``decision_function``, which is higher for *normal* samples, so it
   silently reports ``1 - AUROC``: model selection then picks the *worst*
   detector. Use :data:`image_auroc_scorer` (or
   ``get_anomaly_scorer("image_auroc")``) instead.
"""

import copy

import numpy as np
from sklearn.utils._param_validation import StrOptions, validate_params

from ._pro import aupro
from ._ranking import f1_max, image_auroc, pixel_auroc


def _max_per_image(values):
    """Reduce per-pixel values of shape (n_images, ...) to one per image."""
    if values.ndim == 1:
        return values
    return values.max(axis=tuple(range(1, values.ndim)))


class _AnomalyScorer:
    """Score an estimator with ``metric(y, -estimator.score_samples(X))``.

    Build instances with :func:`make_anomaly_scorer`.

    Notes
    -----
    The sign flip is the point: scikit-learn's ``scoring="roc_auc"`` ranks
    outlier detectors by ``decision_function`` (higher = more normal) and so,
    with ``y`` where 1 = anomaly, silently returns ``1 - AUROC``.
    """

    def __init__(self, metric, level, kwargs):
        self._metric = metric
        self._level = level
        self._kwargs = kwargs

    def __repr__(self):
        arguments = [getattr(self._metric, "__name__", repr(self._metric))]
        if self._level != "image":
            arguments.append(f"level={self._level!r}")
        arguments += [f"{key}={value!r}" for key, value in self._kwargs.items()]
        return f"make_anomaly_scorer({', '.join(arguments)})"

    def __call__(self, estimator, X, y):
        """Evaluate `estimator` on `X` against the ground truth `y`.

        Parameters
        ----------
        estimator : object
            Fitted estimator with a ``score_samples`` method returning higher
            values for more normal samples.
        X : array-like
            Images to score.
        y : array-like of shape (n_images,) or (n_images, height, width)
            Ground truth, 1 = defective: image labels or pixel masks.

        Returns
        -------
        score : float
            The metric's value; greater is better.
        """
        if y is None:
            msg = (
                f"{self!r} needs the ground truth y (1 = defective) to score "
                "an anomaly detector; got y=None."
            )
            raise ValueError(msg)
        if not hasattr(estimator, "score_samples"):
            msg = (
                f"{self!r} needs an estimator with a score_samples method "
                f"(higher = more normal); {type(estimator).__name__} has none."
            )
            raise TypeError(msg)
        y = np.asarray(y)
        normality = np.asarray(estimator.score_samples(X))
        if normality.dtype.kind not in "f":
            # Negating unsigned integers would wrap around.
            normality = normality.astype(np.float64)
        anomaly = -normality

        level = self._level
        if level == "auto":
            level = "image" if y.ndim == 1 else "pixel"
        if level == "image":
            # An image is as anomalous as its most anomalous pixel, and
            # defective if any of its pixels is, so that masks can serve as
            # labels too (one y for image and pixel metrics in one search).
            y, anomaly = _max_per_image(y), _max_per_image(anomaly)
        elif anomaly.ndim == 1:
            msg = (
                f"{self!r} scores pixels, so it needs a segmenter whose "
                "score_samples returns maps of shape (n_images, height, width); "
                f"{type(estimator).__name__}.score_samples returned shape "
                f"{anomaly.shape}. Use an image-level scorer such as "
                "image_auroc_scorer for classifiers."
            )
            raise ValueError(msg)
        return float(self._metric(y, anomaly, **self._kwargs))


@validate_params(
    {"metric": [callable], "level": [StrOptions({"image", "pixel", "auto"})]},
    prefer_skip_nested_validation=True,
)
def make_anomaly_scorer(metric, *, level="image", **kwargs):
    """Make a model-selection scorer for anomaly detectors from a metric.

    The scorer computes ``metric(y, -estimator.score_samples(X), **kwargs)``:
    it turns the estimator's normality scores (higher = more normal) into
    anomaly scores (higher = more anomalous) before calling `metric`.

    Parameters
    ----------
    metric : callable
        Function ``metric(y_true, y_score, **kwargs)`` with ``y_true``
        1 = anomalous and ``y_score`` higher = more anomalous, returning a
        float where greater is better (such as :func:`image_auroc`).

    level : {"image", "pixel", "auto"}, default="image"
        - "image": `metric` gets one label and one score per image. Per-pixel
          scores are reduced to their maximum per image, and masks given as
          ``y`` to "is any pixel defective".
        - "pixel": `metric` gets masks and anomaly maps of shape
          ``(n_images, height, width)``; the estimator must be a segmenter.
        - "auto": "image" when ``y`` is 1-D, "pixel" otherwise.

    **kwargs : dict
        Further keyword arguments for `metric`, such as ``fpr_limit`` for
        :func:`aupro`.

    Returns
    -------
    scorer : callable
        Scorer ``scorer(estimator, X, y)`` returning a float, greater is
        better.

    See Also
    --------
    get_anomaly_scorer : Ready-made scorers by name.
    sklearn.metrics.make_scorer : The scikit-learn equivalent for classifiers
        and regressors.

    Notes
    -----
    scikit-learn's own ``scoring="roc_auc"`` uses ``decision_function``, which
    is higher for normal samples in outlier detectors, so with ``y`` where
    1 = anomaly it silently returns ``1 - AUROC``. Scorers made here negate
    ``score_samples`` instead and give the intended value.

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch.metrics import aupro, make_anomaly_scorer
    >>> scorer = make_anomaly_scorer(aupro, level="pixel", fpr_limit=0.05)
    >>> scorer
    make_anomaly_scorer(aupro, level='pixel', fpr_limit=0.05)
    >>> class PerfectSegmenter:
    ...     def score_samples(self, X):
    ...         return -X  # higher = more normal
    >>> masks = np.zeros((2, 4, 4))
    >>> masks[0, 1:3, 1:3] = 1
    >>> scorer(PerfectSegmenter(), masks, masks)
    1.0
    """
    return _AnomalyScorer(metric, level, kwargs)


image_auroc_scorer = make_anomaly_scorer(image_auroc)
pixel_auroc_scorer = make_anomaly_scorer(pixel_auroc, level="pixel")
aupro_scorer = make_anomaly_scorer(aupro, level="pixel")
f1_max_scorer = make_anomaly_scorer(f1_max, level="auto")

_SCORERS = {
    "aupro": aupro_scorer,
    "f1_max": f1_max_scorer,
    "image_auroc": image_auroc_scorer,
    "pixel_auroc": pixel_auroc_scorer,
}


def get_anomaly_scorer(name):
    """Get an anomaly-detection scorer by name.

    Parameters
    ----------
    name : {"image_auroc", "pixel_auroc", "aupro", "f1_max"}
        - "image_auroc": :func:`image_auroc` of per-image anomaly scores
          (maximum of the anomaly map for segmenters) against image labels.
        - "pixel_auroc": :func:`pixel_auroc` of anomaly maps against masks;
          needs a segmenter.
        - "aupro": :func:`aupro` (``fpr_limit=0.3``) of anomaly maps against
          masks; needs a segmenter.
        - "f1_max": :func:`f1_max` against image labels (1-D ``y``) or masks
          (3-D ``y``).

    Returns
    -------
    scorer : callable
        A copy of the scorer, ``scorer(estimator, X, y)`` returning a float
        where greater is better.

    Raises
    ------
    ValueError
        If `name` is not one of the names above.

    See Also
    --------
    make_anomaly_scorer : Make a scorer from any metric.

    Notes
    -----
    Pass these scorers, not ``scoring="roc_auc"``, to scikit-learn's model
    selection: for outlier detectors ``"roc_auc"`` ranks by
    ``decision_function`` (higher = normal) and with ``y`` where 1 = anomaly
    silently gives ``1 - AUROC``.

    Examples
    --------
    >>> from skpatch.metrics import get_anomaly_scorer
    >>> get_anomaly_scorer("aupro")
    make_anomaly_scorer(aupro, level='pixel')
    """
    try:
        scorer = _SCORERS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(valid_name) for valid_name in sorted(_SCORERS))
        msg = f"{name!r} is not a valid anomaly scorer name; valid names are {valid}."
        raise ValueError(msg) from None
    return copy.deepcopy(scorer)
