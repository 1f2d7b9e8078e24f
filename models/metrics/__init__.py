"""Anomaly-detection metrics in PyTorch: image/pixel AUROC, AUPRO@0.3, the legacy full PRO.

All curves are exact: the scores are sorted once and tied scores form one step, so the results
equal ``sklearn.metrics.roc_auc_score`` and the MVTec-AD evaluation code. They run on any
device; only the labelling of ground-truth regions for the PRO runs on the CPU.
"""

from .aupro import DEFAULT_FPR_LIMIT, ProCurve, aupro, pro_curve, region_weights
from .auroc import RocCurve, auroc, image_auroc, pixel_auroc, roc_curve
from .legacy_pro import LEGACY_PRO_STEPS, legacy_pro, legacy_pro_curve

__all__ = [
    "DEFAULT_FPR_LIMIT",
    "LEGACY_PRO_STEPS",
    "ProCurve",
    "RocCurve",
    "aupro",
    "auroc",
    "image_auroc",
    "legacy_pro",
    "legacy_pro_curve",
    "pixel_auroc",
    "pro_curve",
    "region_weights",
    "roc_curve",
]
