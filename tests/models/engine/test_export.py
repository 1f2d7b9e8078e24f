"""Export: the ONNX, TorchScript and ``torch.export`` programs of a run give flowkit's maps and
scores at any batch size, run by their own runtimes from the written files; failures write
nothing and say what to do."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from flowkit.models.base import AnomalyModel
from flowkit.models.baseline import MeanImageBaseline
from flowkit.models.csflow.model import CSFlow
from flowkit.models.engine import export
from flowkit.models.engine.checkpoint import save_checkpoint
from flowkit.models.engine.config import DataSettings, RunConfig
from flowkit.models.engine.export import (
    EXPORT_INSTALL,
    TOLERANCE,
    ExportError,
    ExportFormat,
    default_export_path,
    export_model,
    export_run,
)
from flowkit.models.engine.files import write_json
from flowkit.models.engine.run_folder import RunFolder, RunMode
from flowkit.models.engine.training import TrainOptions, train
from flowkit.models.errors import RunFolderError
from flowkit.models.pyramidflow.model import PyramidFlow
from flowkit.testing import perturb_parameters_

from ..threads import one_thread
from ..tiny_model import TINY, TinyAutoencoder

pytestmark = pytest.mark.usefixtures("single_thread")

FORMATS = [fmt.value for fmt in ExportFormat]

# Each built-in model with a small image size it takes; CS-Flow's test backbone ("random") needs
# multiples of 128.
MODELS: dict[str, tuple[Callable[[], AnomalyModel], int]] = {
    "pyramidflow": (lambda: PyramidFlow(channels=4, levels=3, num_stack=1, kernel_size=3,
                                        image_size=32), 32),
    "csflow": (lambda: CSFlow(backbone="random", hidden=8, num_blocks=2), 128),
    "baseline": (lambda: MeanImageBaseline(levels=3, image_size=32), 32),
}


def _fitted_run(root: Path, model: AnomalyModel, image_size: int) -> RunFolder:
    """A run folder holding ``model`` with random non-trivial weights, fitted on random
    images, as ``checkpoints/final.pt`` (training is tested elsewhere)."""
    perturb_parameters_(model, scale=0.1)
    model.fit_normal([torch.rand(2, 3, image_size, image_size)])
    config = RunConfig(model.name, dict(model.config),
                       DataSettings("synthetic", None, "brick", image_size), epochs=1,
                       batch_size=2, seed=0, optimizer=dict(model.optimizer_settings()))
    run = RunFolder.prepare(root, RunMode.NEW)
    write_json(run.config, config.to_json())
    save_checkpoint(run.final_checkpoint, model.eval(), None, 1, 1, config.to_json())
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A trained one-epoch run of the tiny model at 32 px."""
    model = TinyAutoencoder()
    config = RunConfig(TINY, dict(model.config), DataSettings("synthetic", None, "brick", 32),
                       epochs=1, batch_size=4, seed=0, optimizer=dict(model.optimizer_settings()))
    run = RunFolder.prepare(tmp_path_factory.mktemp("export") / "tiny", RunMode.NEW)
    with one_thread():
        train(config, run, TrainOptions(torch.device("cpu"), progress=False, quiet=True))
    return run


def _runner(path: Path, fmt: str) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """The written file, loaded by its own runtime (not flowkit's loader)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["images"]
        assert [o.name for o in session.get_outputs()] == ["maps", "scores"]
        return lambda images: tuple(torch.from_numpy(a)
                                    for a in session.run(None, {"images": images.numpy()}))
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


def _flowkit_ops(path: Path, fmt: str) -> set[str]:
    """The operations of flowkit's own (``torch.library``) in the written program."""
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path)).graph
        return {f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")}
    if fmt == "torchscript":
        graph = torch.jit.load(str(path)).inlined_graph
        return {node.kind() for node in graph.nodes() if node.kind().startswith("flowkit::")}
    graph = torch.export.load(str(path)).graph
    return {str(node.target) for node in graph.nodes if "flowkit" in str(node.target)}


def _assert_matches(run: Callable[[Tensor], tuple[Tensor, ...]], model: AnomalyModel,
                    images: Tensor) -> None:
    """The program's maps and scores equal the model's to :data:`TOLERANCE` of their scale."""
    want = model.eval().predict(images)
    got = run(images)
    assert len(got) == 2
    for expected, actual in zip(want, got, strict=True):
        assert actual.shape == expected.shape and actual.dtype == torch.float32
        scale = float(expected.abs().max())
        torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE * scale)


@pytest.fixture(scope="module", params=[*MODELS, TINY])
def exported_runs(request, tmp_path_factory, tiny_run) -> tuple[AnomalyModel, int, dict]:
    """A run of each model exported in every format: the model, its size, the files."""
    if request.param == TINY:
        run, size = tiny_run, 32
        from flowkit.models.engine.checkpoint import load_model

        model = load_model(run.final_checkpoint)
    else:
        build, size = MODELS[request.param]
        model = build()
        run = _fitted_run(tmp_path_factory.mktemp("export") / request.param, model, size)
    files = {fmt: export_run(run.root, fmt) for fmt in FORMATS}
    return model, size, files


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_program_matches_flowkit_at_any_batch_size(exported_runs, fmt: str) -> None:
    model, size, files = exported_runs
    assert files[fmt] == default_export_path(files[fmt].parents[1], fmt) and files[fmt].is_file()
    run = _runner(files[fmt], fmt)
    assert not _flowkit_ops(files[fmt], fmt), "the program needs flowkit's custom ops"

    @settings(max_examples=4)
    @given(st.sampled_from([1, 3, 2, 5]), st.integers(0, 2**16))
    def matches(batch: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        _assert_matches(run, model, torch.rand(batch, 3, size, size, generator=generator))

    matches()


def test_export_run_writes_where_asked_and_creates_the_folder(tiny_run, tmp_path) -> None:
    out = export_run(tiny_run.root, "exported", tmp_path / "deep" / "tiny.pt2")
    assert out == tmp_path / "deep" / "tiny.pt2" and out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.pt2"]  # no temporary left


def test_a_missing_onnx_package_names_the_extra(tiny_run, tmp_path, monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    with pytest.raises(ExportError, match=r"onnxruntime, which are not installed; install them "
                                          rf"with: {re.escape(EXPORT_INSTALL)}$"):
        export_run(tiny_run.root, "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_program_that_differs_from_flowkit_is_not_written(tiny_run, tmp_path,
                                                           monkeypatch) -> None:
    # The writer returns the program of another model (other weights): the check catches it.
    other = TinyAutoencoder()
    perturb_parameters_(other, scale=1.0)
    other.fit_normal([torch.rand(2, 3, 32, 32)])
    wrong = export._to_exported(export.Predictor(other), torch.rand(2, 3, 32, 32))
    monkeypatch.setitem(export._WRITERS, ExportFormat.EXPORTED, lambda *args: wrong)
    with pytest.raises(ExportError, match=r"maps differ from flowkit's at batch size 1 .*"
                                          "nothing was written"):
        export_run(tiny_run.root, "exported", tmp_path / "m.pt2")
    assert not any(tmp_path.iterdir())


def test_a_program_that_fails_at_another_batch_size_is_refused(tmp_path, monkeypatch) -> None:
    # Traced without a dynamic batch (torch.export's default): batch 1 and 3 are refused.
    model = TinyAutoencoder()
    model.fit_normal([torch.rand(2, 3, 32, 32)])
    monkeypatch.setattr(export, "_batch_dim", lambda: None)
    with pytest.raises(ExportError, match="fails at batch size 1 .* export in another format"):
        export_model(model, 32, "exported", tmp_path / "m.pt2")
    assert not any(tmp_path.iterdir())


def test_an_exporter_failure_names_the_model_and_format(tmp_path, monkeypatch) -> None:
    def unsupported(*args):
        raise RuntimeError("aten::fancy_op is not supported\nmore details")

    monkeypatch.setitem(export._WRITERS, ExportFormat.ONNX, unsupported)
    model = TinyAutoencoder()
    model.fit_normal([torch.rand(2, 3, 32, 32)])
    with pytest.raises(ExportError, match=r"^tiny cannot be exported to ONNX: RuntimeError: "
                                          r"aten::fancy_op is not supported more details$"):
        export_model(model, 32, "onnx", tmp_path / "m.onnx")


def test_bad_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of 'onnx'"):
        export_run(tmp_path, "tflite")
    with pytest.raises(RunFolderError, match="not a flowkit run folder"):
        export_run(tmp_path, "onnx")
