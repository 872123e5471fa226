"""Anomaly detection metrics and scorers (1 = defective, higher score = more anomalous).

Metrics follow scikit-learn's ``metric(y_true, y_score)`` convention with
``y_true`` 1 = anomalous and ``y_score`` higher = more anomalous. Scorers
(``scorer(estimator, X, y)``, greater is better) wrap them for
:class:`~sklearn.model_selection.GridSearchCV` and friends, negating the
estimators' ``score_samples`` (higher = more normal). Do not use
``scoring="roc_auc"`` for anomaly detectors with y where 1 = anomaly: it
silently gives ``1 - AUROC``.
"""

from ._pro import aupro, pro_curve
from ._ranking import f1_max, image_auroc, pixel_auroc
from ._scorers import (
    aupro_scorer,
    f1_max_scorer,
    get_anomaly_scorer,
    image_auroc_scorer,
    make_anomaly_scorer,
    pixel_auroc_scorer,
)

__all__ = [
    "aupro",
    "aupro_scorer",
    "f1_max",
    "f1_max_scorer",
    "get_anomaly_scorer",
    "image_auroc",
    "image_auroc_scorer",
    "make_anomaly_scorer",
    "pixel_auroc",
    "pixel_auroc_scorer",
    "pro_curve",
]
