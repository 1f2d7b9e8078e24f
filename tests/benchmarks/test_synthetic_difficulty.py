"""The per-kind metrics of benchmarks/synthetic_difficulty: each kind is measured on the normal
images with its own, and 'all' on everything; and the command on a real (baseline) run."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.synthetic_difficulty import ALL_KINDS, kind_metrics, main
from flowkit.models.cli import main as flowkit_main
from flowkit.models.engine.evaluate import Evaluation
from flowkit.models.metrics import aupro, image_auroc, pixel_auroc


def _evaluation(counts: dict[str, int], size: int, seed: int) -> Evaluation:
    """Random rectangle masks; kind 'found' scored perfectly, kind 'missed' perfectly wrong."""
    generator = torch.Generator().manual_seed(seed)
    masks, maps, scores, defects = [], [], [], []
    for kind, count in counts.items():
        for _ in range(count):
            mask = torch.zeros(1, size, size, dtype=torch.bool)
            if kind != "good":
                top, left = torch.randint(0, size - 2, (2,), generator=generator).tolist()
                height, width = torch.randint(1, 3, (2,), generator=generator).tolist()
                mask[:, top:top + height, left:left + width] = True
            sign = {"good": 0.0, "found": 1.0, "missed": -1.0}[kind]
            noise = 0.1 * torch.rand(1, size, size, generator=generator)
            maps.append(sign * mask + noise * ~mask)
            scores.append(sign)
            masks.append(mask)
            defects.append(kind)
    labels = torch.tensor([int(d != "good") for d in defects])
    return Evaluation(torch.stack(maps), torch.tensor(scores), torch.stack(masks), labels,
                      defects, [f"{i}.png" for i in range(len(defects))], 0.0)


@settings(max_examples=20)
@given(good=st.integers(1, 3), found=st.integers(1, 3), missed=st.integers(1, 3),
       size=st.integers(6, 12), seed=st.integers(0, 2**31 - 1))
def test_each_kind_is_measured_with_the_normal_images(good: int, found: int, missed: int,
                                                      size: int, seed: int) -> None:
    evaluation = _evaluation({"good": good, "found": found, "missed": missed}, size, seed)
    result = kind_metrics(evaluation)
    assert list(result) == ["found", "missed", ALL_KINDS]
    assert result["found"] == {"image_auroc": 1.0, "pixel_auroc": 1.0, "aupro_0.3": 1.0}
    assert result["missed"]["image_auroc"] == 0.0 and result["missed"]["pixel_auroc"] == 0.0
    assert result[ALL_KINDS] == {
        "image_auroc": image_auroc(evaluation.scores, evaluation.labels),
        "pixel_auroc": pixel_auroc(evaluation.maps, evaluation.masks),
        "aupro_0.3": aupro(evaluation.maps, evaluation.masks),
    }
    assert 0 < result[ALL_KINDS]["pixel_auroc"] < 1


@pytest.mark.parametrize("counts", [{"found": 2}, {"good": 2}])
def test_needs_normal_and_defective_images(counts: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="needs a test split with normal and defective"):
        kind_metrics(_evaluation(counts, 8, 0))


def test_command_agrees_with_the_run(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    code = flowkit_main(["train", "--model", "baseline", "--category", "pcb", "--image-size", "32",
                         "--out", str(run), "--quiet"])
    assert code == 0
    capsys.readouterr()
    main([str(run)])
    table = capsys.readouterr().out.splitlines()
    kinds = [line.split("|")[4].strip() for line in table[2:]]
    assert kinds == ["extra", "hairline", "misplaced", "missing", "shifted", ALL_KINDS]
    recorded = json.loads((run / "metrics.json").read_text())
    cells = [cell.strip() for cell in table[-1].split("|")[5:8]]
    assert cells == [f"{recorded[key]:.3f}" for key in ("image_auroc", "pixel_auroc", "aupro_0.3")]
