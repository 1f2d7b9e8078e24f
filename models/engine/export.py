"""Export a trained run's anomaly map and image score to ONNX, TorchScript or ``torch.export``.

The exported program takes ``images`` ``[B, 3, H, W]`` float32 RGB in [0, 1] at the run's
image size (as ``flowkit predict`` feeds the model, before its own normalization) and returns
``maps`` ``[B, 1, H, W]`` and ``scores`` ``[B]``; the batch size ``B`` is dynamic. It is traced
on the CPU with the Triton kernels off (their plain-PyTorch references, which every exporter
can read), and it is checked before it is written: the saved bytes are loaded back, run at
batch sizes 1 and 3, and must give flowkit's maps and scores to :data:`TOLERANCE`.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import re
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

import flowkit
import flowkit.kernels
from flowkit.kernels import use_kernels

from ..base import AnomalyModel
from ..data import Choice
from ..errors import AppError
from .checkpoint import load_model
from .files import atomic_write
from .run_folder import RunFolder

__all__ = [
    "CHECK_BATCH_SIZES",
    "EXPORT_INSTALL",
    "TOLERANCE",
    "ExportError",
    "ExportFormat",
    "Predictor",
    "default_export_path",
    "export_model",
    "export_run",
    "load_exported",
]

EXPORT_INSTALL = 'pip install "flowkit[export]"'
"""What installs the packages the ONNX format needs (onnx, onnxscript, onnxruntime)."""

CHECK_BATCH_SIZES = (1, 3)
"""The batch sizes the written program is run at before it is kept (the batch is dynamic)."""

TOLERANCE = 1e-4
"""Largest difference allowed between the exported program's outputs and flowkit's, relative to
the largest absolute value of each output (float32 rounding: exporters reorder sums)."""

# The example batch the program is traced with: 2, because exporters specialize sizes 0 and 1.
_EXAMPLE_BATCH = 2
_CHECK_SEED = 0
_INPUT_NAMES = ["images"]
_OUTPUT_NAMES = ["maps", "scores"]
_REASON_CHARS = 400
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# flowkit's packages (flowkit, flowkit.kernels, flowkit.models), to name the line an exporter met.
_SOURCES = (
    Path(flowkit.__file__).resolve().parent,
    Path(flowkit.kernels.__file__).resolve().parent,
    Path(__file__).resolve().parents[1],
)
_THIS_FILE = Path(__file__).resolve()
_TREESPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
# The ONNX exporter logs a warning per torchvision op it cannot register; flowkit has none.
_ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


class ExportError(AppError, RuntimeError):
    """A run that cannot be exported as asked: a missing package, an operation the exporter
    cannot translate, or a program whose outputs differ from flowkit's."""


class ExportFormat(Choice):
    """What ``flowkit export`` writes."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    EXPORTED = "exported"


_LABELS = {
    ExportFormat.ONNX: "ONNX",
    ExportFormat.TORCHSCRIPT: "TorchScript",
    ExportFormat.EXPORTED: "torch.export",
}

_SUFFIXES = {
    ExportFormat.ONNX: ".onnx",
    ExportFormat.TORCHSCRIPT: ".torchscript.pt",
    ExportFormat.EXPORTED: ".pt2",
}

# The modules each format needs beyond torch (import name -> what the error names).
_NEEDS = {
    ExportFormat.ONNX: ("onnx", "onnxscript", "onnxruntime"),
    ExportFormat.TORCHSCRIPT: (),
    ExportFormat.EXPORTED: (),
}


class Predictor(nn.Module):
    """``images -> (maps, scores)`` of a model in eval mode: what an export traces.

    Args:
        model: the trained model (put in eval mode).
    """

    def __init__(self, model: AnomalyModel) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(maps [B, 1, H, W], scores [B])`` of ``images`` ``[B, 3, H, W]`` in [0, 1]."""
        return self.model.predict(images)


def default_export_path(run_dir: str | Path, fmt: ExportFormat | str) -> Path:
    """Where :func:`export_run` writes without ``out``: ``RUN/export/model<suffix>``."""
    return Path(run_dir) / "export" / f"model{_SUFFIXES[ExportFormat(fmt)]}"


def _require(fmt: ExportFormat) -> None:
    """Raise :class:`ExportError` naming the install command if a package ``fmt`` needs is
    missing."""
    missing = [name for name in _NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(
            f"the {_LABELS[fmt]} export needs the package(s) {', '.join(missing)}, which are not "
            f"installed; install them with: {EXPORT_INSTALL}"
        )


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Hide what the exporters warn about the traced code's Python branches (the program is
    checked numerically at two batch sizes instead), torch's internal deprecations and the ONNX
    exporter's registration log."""
    logger = logging.getLogger(_ONNX_REGISTRATION_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch's own deprecation inside the ONNX exporter (torch 2.13), nothing of ours.
            warnings.filterwarnings("ignore", _TREESPEC_WARNING, FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _batch_dim() -> dict[int, torch.export.Dim]:
    """The dynamic batch axis of ``images``."""
    return {0: torch.export.Dim("batch", min=1)}


def _to_onnx(predictor: Predictor, example: Tensor) -> bytes:
    program = torch.onnx.export(
        predictor, (example,), dynamo=True, verbose=False, input_names=_INPUT_NAMES,
        output_names=_OUTPUT_NAMES, dynamic_shapes=(_batch_dim(),),
    )
    return program.model_proto.SerializeToString()


def _to_torchscript(predictor: Predictor, example: Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(predictor, (example,), check_trace=False), buffer)
    return buffer.getvalue()


def _to_exported(predictor: Predictor, example: Tensor) -> bytes:
    buffer = io.BytesIO()
    program = torch.export.export(predictor, (example,), dynamic_shapes=(_batch_dim(),))
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _reason(error: BaseException) -> str:
    """The root cause of an exporter's error on one line, with the line of flowkit's code it
    met (exporters wrap the cause in several layers of generic advice)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    lines = [line.strip() for line in _ANSI_ESCAPE.sub("", str(error)).splitlines()]
    text = " ".join(line for line in lines if line)[:_REASON_CHARS]
    reason = f"{type(error).__name__}: {text}"
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        source = Path(frame.filename).resolve()
        root = next((root for root in _SOURCES if source.is_relative_to(root)), None)
        if root is not None and source != _THIS_FILE:
            where = source.relative_to(root.parent)
            return f"{reason} (at {where}:{frame.lineno}: {frame.line})"
    return reason


_WRITERS: dict[ExportFormat, Callable[[Predictor, Tensor], bytes]] = {
    ExportFormat.ONNX: _to_onnx,
    ExportFormat.TORCHSCRIPT: _to_torchscript,
    ExportFormat.EXPORTED: _to_exported,
}


def load_exported(data: bytes, fmt: ExportFormat | str) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """A function running the exported program ``data`` on CPU images, as tensors.

    Args:
        data: the file's bytes.
        fmt: its format.

    Returns:
        ``images -> (maps, scores)``.
    """
    fmt = ExportFormat(fmt)
    if fmt is ExportFormat.ONNX:
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return lambda images: tuple(
            torch.from_numpy(out) for out in session.run(None, {"images": images.numpy()})
        )
    if fmt is ExportFormat.TORCHSCRIPT:
        return torch.jit.load(io.BytesIO(data), map_location="cpu")
    return torch.export.load(io.BytesIO(data)).module()


def _check(data: bytes, fmt: ExportFormat, predictor: Predictor, image_size: int) -> None:
    """Run the program at :data:`CHECK_BATCH_SIZES` against ``predictor``; raise if it differs."""
    run = load_exported(data, fmt)
    generator = torch.Generator().manual_seed(_CHECK_SEED)
    for batch in CHECK_BATCH_SIZES:
        images = torch.rand(batch, 3, image_size, image_size, generator=generator)
        expected = predictor(images)
        try:
            got = run(images)
        except Exception as error:
            raise ExportError(
                f"the {_LABELS[fmt]} program fails at batch size {batch} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); it was traced "
                f"at batch size {_EXAMPLE_BATCH}: export in another format"
            ) from error
        for name, want, have in zip(_OUTPUT_NAMES, expected, got, strict=True):
            scale = float(want.abs().max())
            error = float((want - have).abs().max()) if want.shape == have.shape else float("inf")
            if not error <= TOLERANCE * max(scale, 1e-12):
                raise ExportError(
                    f"the {_LABELS[fmt]} program's {name} differ from flowkit's at batch size "
                    f"{batch} (largest difference {error:.3g}, shape {tuple(have.shape)}, for "
                    f"values up to {scale:.3g}); nothing was written: export in another format"
                )


def export_model(model: AnomalyModel, image_size: int, fmt: ExportFormat | str,
                 out: str | Path) -> Path:
    """Export ``model``'s anomaly map and image score, check the program, write it atomically.

    Args:
        model: a trained model (fitted: :meth:`AnomalyModel.fit_normal` has run); moved to
            the CPU in eval mode.
        image_size: the side of the square images the program takes.
        fmt: ``"onnx"``, ``"torchscript"`` or ``"exported"`` (``torch.export``, a ``.pt2``).
        out: the file to write (its folder is created).

    Returns:
        ``out``.

    Raises:
        ExportError: a package the format needs is missing, the exporter cannot translate the
            model, or the program's outputs differ from flowkit's (then nothing is written).
        ValueError: an unknown format.
    """
    fmt = ExportFormat(fmt)
    _require(fmt)
    predictor = Predictor(model.cpu())
    example = torch.rand(_EXAMPLE_BATCH, 3, image_size, image_size,
                         generator=torch.Generator().manual_seed(_CHECK_SEED))
    with torch.no_grad(), use_kernels(False), _quiet_exporters():
        predictor(example)  # the model's own checks (a fitted template, the image size) first
        try:
            data = _WRITERS[fmt](predictor, example)
        except Exception as error:
            raise ExportError(
                f"{model.name} cannot be exported to {_LABELS[fmt]}: {_reason(error)}"
            ) from error
        _check(data, fmt, predictor, image_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda handle: handle.write(data))
    return out


def export_run(run_dir: str | Path, fmt: ExportFormat | str, out: str | Path | None = None
               ) -> Path:
    """Export the final model of a run folder (see the module docstring for the program).

    Args:
        run_dir: a run folder of ``flowkit train``.
        fmt: ``"onnx"``, ``"torchscript"`` or ``"exported"``.
        out: the file to write; default :func:`default_export_path`.

    Returns:
        The path written.

    Raises:
        RunFolderError: not a finished run folder.
        CheckpointError: an unusable final checkpoint.
        ExportError: as :func:`export_model`.
        ValueError: an unknown format.

    Example:
        >>> from flowkit.models.engine.export import export_run
        >>> export_run("runs/bottle", "onnx")  # doctest: +SKIP
        PosixPath('runs/bottle/export/model.onnx')
    """
    fmt = ExportFormat(fmt)
    folder = RunFolder.open(run_dir)
    config = folder.read_config()
    model = load_model(folder.final_checkpoint, "cpu", expected_model=config.model)
    target = default_export_path(folder.root, fmt) if out is None else Path(out)
    return export_model(model, config.data.image_size, fmt, target)
