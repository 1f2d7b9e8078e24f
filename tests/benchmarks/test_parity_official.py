"""The parity harness: its weight mapping and training loop on our model against itself, and,
given a checkout of the official code, our model against the official one.

The official test needs third-party code flowkit never vendors: it runs when
``FLOWKIT_OFFICIAL_PYRAMIDFLOW`` points at a checkout of gasharper/PyramidFlow (and
``FLOWKIT_OFFICIAL_AUTOFLOW`` at gasharper/autoFlow; default: a sibling folder ``autoFlow``).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.parity_official import (
    OfficialSide,
    OursSide,
    ParityReport,
    build_ours,
    curve_maxima,
    from_official_state,
    load_mapped,
    load_official,
    main,
    official_clamp_scale,
    official_state,
    plain_twin,
    run_alone,
    run_parity,
    synthetic_data,
)
from flowkit.models.pyramidflow import PyramidFlow
from flowkit.testing import perturb_parameters_
from flowkit.testing import strategies as fst

OFFICIAL = os.environ.get("FLOWKIT_OFFICIAL_PYRAMIDFLOW")
AUTOFLOW = os.environ.get("FLOWKIT_OFFICIAL_AUTOFLOW") or (
    str(Path(OFFICIAL).parent / "autoFlow") if OFFICIAL else None
)
SMALL = {"channels": 4, "levels": 3, "num_stack": 1, "kernel_size": 3, "image_size": 32}


def _small(seed: int, volume_norm: str = "channel", **kwargs) -> PyramidFlow:
    torch.manual_seed(seed)
    return PyramidFlow(encoder="none", volume_norm=volume_norm, **{**SMALL, **kwargs})


def _twin(model: PyramidFlow, seed: int) -> PyramidFlow:
    """A second model with other initial weights, then ``model``'s copied through the
    official naming (ours -> official -> ours)."""
    twin = _small(seed + 1, model.config["volume_norm"])
    load_mapped(twin, from_official_state(twin, official_state(model)))
    return twin


@settings(max_examples=6)
@given(seed=fst.seeds(), volume_norm=st.sampled_from(["channel", "spatial"]))
def test_weight_mapping_round_trips_every_mapped_tensor(seed, volume_norm) -> None:
    model = perturb_parameters_(_small(seed, volume_norm), scale=0.2, seed=seed)
    twin = _twin(model, seed)
    mine, theirs = model.state_dict(), twin.state_dict()
    mapped = set(from_official_state(model, official_state(model)))
    assert {k for k, _ in model.named_parameters()} <= mapped  # every trainable tensor
    for name in mapped:
        assert torch.equal(mine[name], theirs[name]), name


def test_a_trained_cvn_down_running_mean_is_refused() -> None:
    model = _small(0, levels=2)
    model.flow.blocks[0].norm.running_mean.fill_(0.5)  # block 0 of L=2 is 'down' at 0
    with pytest.raises(ValueError, match="full resolution"):
        official_state(model)


@pytest.mark.parametrize("volume_norm", ["channel", "spatial"])
def test_harness_trains_and_evaluates_our_model_against_itself(volume_norm) -> None:
    """Through the mapping, the same code on the same batches: equal at every step."""
    model = _small(3, volume_norm)
    twin = _twin(model, 3)
    train, test, masks = synthetic_data("nut", 32, num_train=6)
    report = run_parity(OursSide(model), OursSide(twin, name="twin"), "self", train, test, masks,
                        steps=4, batch_size=2, seed=0)
    assert len(report.losses) == 4
    assert all(a == b and math.isfinite(a) for a, b in report.losses)
    assert report.losses[0] != report.losses[-1]  # the weights moved
    assert report.weight_max_abs == 0.0
    assert report.metrics["ours"] == report.metrics["twin"]
    assert set(report.metrics["ours"]) == {"pixel_auroc", "image_auroc", "aupro_0.3"}
    summary = report.summary()
    assert summary["steps"] == 4 and summary["loss_rel_max"] == 0.0


def test_control_mode_compares_memory_saving_with_plain_autograd() -> None:
    """The control: the same model and weights, our two engines; rounding differences only."""
    model = perturb_parameters_(_small(7), scale=0.2, seed=7)
    twin = plain_twin(model)
    assert twin.model.config["memory_saving"] is False and model.config["memory_saving"]
    train, test, masks = synthetic_data("nut", 32, num_train=4)
    report = run_parity(OursSide(model), twin, "control", train, test, masks, steps=3,
                        batch_size=2)
    assert report.summary()["loss_rel_max"] < 1e-5
    assert report.weight_max_rel < 1e-3, report.worst_tensor
    assert max(report.gradient_rel) < 1e-4


def test_synced_steps_start_every_step_from_the_same_weights() -> None:
    """With ``sync``, the second side is reset to the first's weights before every step: a
    constant clamp difference then shows up per step, not accumulated."""
    model = perturb_parameters_(_small(9), scale=0.2, seed=9)
    twin = _twin(model, 9)
    for block in twin.flow.blocks:
        block.clamp_scale = 0.6
    train, test, masks = synthetic_data("nut", 32, num_train=4)
    report = run_parity(OursSide(model), OursSide(twin, name="twin"), "synced", train, test,
                        masks, steps=3, batch_size=2, sync=True)
    ours = dict(model.named_parameters())
    theirs = dict(twin.named_parameters())
    step = max(float((ours[k] - theirs[k]).detach().abs().max()) for k in ours)
    assert step <= 3 * 2e-4  # one Adam step each, from the same weights (lr 2e-4)
    assert all(d > 1e-5 for d in report.differences())
    assert len(report.gradient_rel) == 3 and min(report.gradient_rel) > 1e-4


def test_harness_sees_a_difference() -> None:
    """A harness that cannot fail proves nothing: another clamp constant shows up at once."""
    model = perturb_parameters_(_small(5), scale=0.2, seed=5)
    twin = _twin(model, 5)
    for block in twin.flow.blocks:
        block.clamp_scale = 0.6
    train, test, masks = synthetic_data("nut", 32, num_train=4)
    report = run_parity(OursSide(model), OursSide(twin, name="twin"), "self", train, test, masks,
                        steps=2, batch_size=2)
    assert report.summary()["first_step_rel"] > 1e-4
    assert report.weight_max_abs > 0.0


@settings(max_examples=3, deadline=None)
@given(seed=fst.seeds(), steps=st.integers(3, 5), eval_every=st.integers(1, 3))
def test_evaluating_every_k_steps_leaves_the_training_unchanged(seed, steps, eval_every) -> None:
    """The curve is taken after every ``eval_every`` steps and after the last; each point is
    what a run stopped at that step reports, and the losses are those of a run without it."""
    train, test, masks = synthetic_data("nut", 32, num_train=6, seed=seed % 3)

    def run(count: int, every: int | None):
        model = perturb_parameters_(_small(seed), scale=0.2, seed=seed)
        return run_parity(OursSide(model), plain_twin(model), "curve", train, test, masks,
                          steps=count, batch_size=2, seed=seed, eval_every=every)

    curved, plain = run(steps, eval_every), run(steps, None)
    assert curved.losses == plain.losses
    assert curved.metrics == plain.metrics == curved.curve[-1]["metrics"]
    expected = sorted({*range(eval_every, steps + 1, eval_every), steps})
    assert [point["step"] for point in curved.curve] == expected
    assert run(expected[0], None).metrics == curved.curve[0]["metrics"]


def test_test_maxima_take_each_metric_at_its_own_best_step() -> None:
    """The official selection: every metric's maximum over the curve, independently; ties go
    to the earlier step."""
    report = ParityReport("m", curve=[
        {"step": 2, "metrics": {"a": {"x": 0.5, "y": 0.9}, "b": {"x": 0.1, "y": 0.2}}},
        {"step": 4, "metrics": {"a": {"x": 0.7, "y": 0.9}, "b": {"x": 0.3, "y": 0.1}}},
        {"step": 5, "metrics": {"a": {"x": 0.6, "y": 0.8}, "b": {"x": 0.3, "y": 0.0}}},
    ])
    assert report.test_maxima() == {
        "a": {"x": {"value": 0.7, "step": 4}, "y": {"value": 0.9, "step": 2}},
        "b": {"x": {"value": 0.3, "step": 4}, "y": {"value": 0.2, "step": 2}},
    }
    with pytest.raises(ValueError, match="eval_every"):
        ParityReport("m").test_maxima()


@settings(max_examples=3, deadline=None)
@given(seed=fst.seeds(), steps=st.integers(2, 5), eval_every=st.integers(1, 3))
def test_a_side_trained_alone_follows_its_trajectory_in_a_pair(seed, steps, eval_every) -> None:
    """``run_alone`` (``--mode official``'s loop) feeds a side the batches ``run_parity`` feeds
    it and evaluates it at the same steps: its losses and curve are side ``a``'s, bit for bit."""
    train, test, masks = synthetic_data("nut", 32, num_train=6, seed=seed % 3)

    def side():
        return OursSide(perturb_parameters_(_small(seed), scale=0.2, seed=seed))

    pair = run_parity(side(), plain_twin(_small(seed)), "pair", train, test, masks,
                      steps=steps, batch_size=2, seed=seed, eval_every=eval_every)
    alone = run_alone(side(), "alone", train, test, masks, steps=steps, batch_size=2,
                      seed=seed, eval_every=eval_every)
    assert alone.losses == [ours for ours, _ in pair.losses]
    assert alone.curve == [{"step": point["step"], "metrics": {"ours": point["metrics"]["ours"]}}
                           for point in pair.curve]
    assert alone.metrics == pair.metrics["ours"]
    assert alone.test_maxima() == curve_maxima(pair.curve)["ours"] == pair.test_maxima()["ours"]
    with pytest.raises(ValueError, match="eval_every"):
        run_alone(side(), "alone", train, test, masks, steps=1, batch_size=2, eval_every=0)


def test_official_mode_needs_a_checkout_and_trains_one_model() -> None:
    for argv in (["--mode", "official"],
                 ["--mode", "official", "--official", "x", "--autoflow", "y", "--sync"]):
        with pytest.raises(SystemExit):
            main(argv)


def test_the_harness_data_is_flowkit_trains_by_default(monkeypatch) -> None:
    """Without ``--data-seed`` the harness scores the test images ``flowkit train`` scores, so
    that an official run and one of ours share their test set; ``--seed`` leaves them alone."""
    import benchmarks.parity_official as harness
    from flowkit.models.engine.config import DataSettings

    seeds = []

    def record(category, size, num_train, seed):
        seeds.append(seed)
        raise KeyboardInterrupt  # stop before anything trains

    monkeypatch.setattr(harness, "synthetic_data", record)
    with pytest.raises(KeyboardInterrupt):
        main(["--mode", "control", "--seed", "7"])
    test = DataSettings("synthetic", None, "nut", 32).dataset("test")
    monkeypatch.undo()
    _, images, masks = synthetic_data("nut", 32, num_train=4, seed=seeds[0])
    assert torch.equal(images, torch.stack([test[i].image for i in range(len(test))]))
    assert torch.equal(masks, torch.stack([test[i].mask for i in range(len(test))]))


def test_eval_every_below_one_is_refused() -> None:
    model = _small(0)
    train, test, masks = synthetic_data("nut", 32, num_train=4)
    with pytest.raises(ValueError, match="eval_every"):
        run_parity(OursSide(model), plain_twin(model), "m", train, test, masks, steps=2,
                   batch_size=2, eval_every=0)
    with pytest.raises(SystemExit):
        main(["--mode", "control", "--eval-every", "0"])


def test_official_code_matches_ours_with_the_parity_options() -> None:
    """The official code, imported from a checkout: it leaves no module behind, and with the
    parity options, the same weights and batches, the losses of both agree to float32 rounding
    at every step, the weights after training too (CVN and SVN)."""
    if OFFICIAL is None:
        pytest.skip("needs FLOWKIT_OFFICIAL_PYRAMIDFLOW: a checkout of gasharper/PyramidFlow "
                    "(third-party code flowkit does not vendor)")
    before = set(sys.modules)
    code = load_official(OFFICIAL, AUTOFLOW)
    assert not {"util", "autoFlow", "pyramidflow_official_model"} & (set(sys.modules) - before)
    scale = official_clamp_scale(code.model)
    assert 0.63 < scale < 0.64 and scale != 2 / math.pi
    train, test, masks = synthetic_data("nut", 32, num_train=6)
    for volume_norm in ("channel", "spatial"):
        ours = build_ours("parity", scale, 0, channels=4, levels=4, num_stack=1, kernel_size=3,
                          image_size=32, volume_norm=volume_norm)
        official = OfficialSide(code, ours, batch_size=2)
        report = run_parity(OursSide(ours), official, "parity", train, test, masks, steps=5,
                            batch_size=2, eval_every=2)
        assert report.summary()["loss_rel_max"] < 1e-5, volume_norm
        assert report.weight_max_rel < 1e-4, (volume_norm, report.worst_tensor)
        assert [point["step"] for point in report.curve] == [2, 4, 5]
        for point in report.curve:
            for metric, value in point["metrics"]["ours"].items():
                official_value = point["metrics"]["official"][metric]
                assert abs(value - official_value) < 1e-2, (volume_norm, point["step"], metric)
