"""Every metric refuses bad input with an error that names the problem and the fix."""

import math

import pytest
import torch

from flowkit.models.metrics import (
    aupr,
    aupro,
    auroc,
    f1_max,
    image_aupr,
    image_auroc,
    image_f1_max,
    legacy_pro,
    pixel_aupr,
    pixel_auroc,
    pixel_f1_max,
)

from .common import hand_example

SCORE_METRICS = [auroc, aupr, f1_max]
IMAGE_METRICS = [image_auroc, image_aupr, image_f1_max]
PIXEL_METRICS = [pixel_auroc, pixel_aupr, pixel_f1_max]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: aupro(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3)), "defect region"),
        (lambda: aupro(torch.zeros(1, 3, 3), torch.ones(1, 3, 3)), "normal pixel"),
        (lambda: aupro(torch.zeros(1, 3, 3), torch.zeros(1, 3, 4)), "same shape"),
        (lambda: aupro(*hand_example(), fpr_limit=0.0), r"fpr_limit must lie in \(0, 1\]"),
        (lambda: aupro(*hand_example(), fpr_limit=1.5), r"fpr_limit must lie in \(0, 1\]"),
        (lambda: legacy_pro(torch.ones(1, 2, 4), hand_example()[1]), "constant maps"),
    ],
)
def test_region_metric_errors_name_the_problem(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("metric", SCORE_METRICS + IMAGE_METRICS)
@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], r"same shape, got \(3,\) and \(2,\)"),
        ([0.1, math.nan], [0, 1], "1 NaN"),
        ([0.1, 0.2], [0, 2], r"binary .* such as \[2\]"),
        ([], [], "empty"),
    ],
)
def test_score_errors_name_the_problem(metric, scores, labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metric(torch.tensor(scores), torch.tensor(labels))


@pytest.mark.parametrize("metric", SCORE_METRICS + IMAGE_METRICS)
@pytest.mark.parametrize(("label", "present"), [(0, "normal"), (1, "anomalous")])
def test_one_class_is_refused_in_words(metric, label: int, present: str) -> None:
    # The name of the metric, what the labels are of, and what to evaluate on instead.
    samples = "images" if metric in IMAGE_METRICS else "samples"
    advice = "both normal and defective images" if samples == "images" else "both normal and"
    with pytest.raises(ValueError, match=rf"only one class .* all 3 {samples} are {present} "
                                         rf"\(label {label}\); .*{advice}"):
        metric(torch.tensor([0.1, 0.2, 0.3]), torch.full((3,), label))


@pytest.mark.parametrize(
    ("metric", "name"),
    [(pixel_auroc, "pixel AUROC"), (pixel_aupr, "pixel AUPR"), (pixel_f1_max, "pixel F1-max")],
)
@pytest.mark.parametrize(("fill", "present"), [(torch.zeros, "normal"), (torch.ones, "anomalous")])
def test_one_class_of_pixels_is_refused_in_words(metric, name: str, fill, present: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} is undefined .* all 18 pixels are {present}"
                                         r".*both normal and defective images"):
        metric(torch.rand(2, 3, 3), fill(2, 3, 3))


@pytest.mark.parametrize("metric", IMAGE_METRICS)
def test_image_metrics_need_one_score_per_image(metric) -> None:
    with pytest.raises(ValueError, match=r"shape \[N\], got \(2, 2\); reduce each anomaly map"):
        metric(torch.zeros(2, 2), torch.zeros(2, 2))


@pytest.mark.parametrize("metric", PIXEL_METRICS + [aupro, legacy_pro])
def test_pixel_metrics_need_a_stack_of_maps(metric) -> None:
    with pytest.raises(ValueError, match=r"\[N, H, W\] or \[N, 1, H, W\], got \(4, 4\)"):
        metric(torch.zeros(4, 4), torch.zeros(4, 4))


@pytest.mark.parametrize("metric", SCORE_METRICS)
def test_complex_scores_are_refused(metric) -> None:
    with pytest.raises(TypeError, match="real"):
        metric(torch.tensor([1j, 2j]), [0, 1])
