"""Anomaly-detection metrics in PyTorch: image/pixel AUROC, AUPR and F1-max, AUPRO@0.3, the
legacy full PRO.

All curves are exact: the scores are sorted once and tied scores form one step, so the results
equal ``sklearn.metrics.roc_auc_score`` and ``average_precision_score``, and the MVTec-AD
evaluation code. They run on any
device; only the labelling of ground-truth regions for the PRO runs on the CPU.
"""

from .aupr import aupr, image_aupr, pixel_aupr
from .aupro import DEFAULT_FPR_LIMIT, ProCurve, aupro, pro_curve, region_weights
from .auroc import RocCurve, auroc, image_auroc, pixel_auroc, roc_curve
from .f1 import F1Max, f1_max, image_f1_max, pixel_f1_max
from .legacy_pro import LEGACY_PRO_STEPS, legacy_pro, legacy_pro_curve

__all__ = [
    "DEFAULT_FPR_LIMIT",
    "LEGACY_PRO_STEPS",
    "F1Max",
    "ProCurve",
    "RocCurve",
    "aupr",
    "aupro",
    "auroc",
    "f1_max",
    "image_aupr",
    "image_auroc",
    "image_f1_max",
    "legacy_pro",
    "legacy_pro_curve",
    "pixel_aupr",
    "pixel_auroc",
    "pixel_f1_max",
    "pro_curve",
    "region_weights",
    "roc_curve",
]
