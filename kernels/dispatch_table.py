"""The recorded GPU validations that let an op take its Triton path: data files, read and written.

A Triton kernel runs on a GPU only where a validation row says that, on that device capability,
in that precision and for that shape class, it matched its reference and beat it (eager PyTorch
or cuDNN). The rows live in one JSON file per op family, ``kernels/dispatch_tables/<family>.json``
(``pyramid``, ``coupling``, ``conv``), written by ``python -m benchmarks.gpu`` on the GPU that
measured them::

    {"rows": [{"op": "pyr_level", "device": "NVIDIA H100 80GB HBM3", "capability": "9.0",
               "precision": "float32", "shape_class": "pyramidflow:n<=2^22:fwd",
               "torch": "2.11.0", "triton": "3.6.0", "date": "2026-12-01 10:00 UTC",
               "correct": true, "speedup": 1.8}]}

``speedup`` is the reference's median time over Triton's. A row applies to every device of its
capability (``major.minor``); the device name, versions and date say where it came from. The
shipped files hold no rows: nothing has been measured on a GPU yet, so every op runs its
reference there unless forced (``FLOWKIT_KERNELS=1``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from .choice import Choice

__all__ = [
    "TABLE_DIR",
    "DispatchTableError",
    "OpFamily",
    "ValidationRow",
    "family_rows",
    "load_table",
    "merge_rows",
    "size_class",
    "validated_row",
    "write_table",
]

TABLE_DIR = Path(__file__).parent / "dispatch_tables"
"""Where the shipped tables live: one ``<family>.json`` per :class:`OpFamily`."""

_MIN_LOG2 = 14
_MAX_LOG2 = 28
_SYMBOLIC_SIZE_CLASS = "n=symbolic"


class OpFamily(Choice):
    """The op families, one table file each."""

    PYRAMID = "pyramid"
    COUPLING = "coupling"
    CONV = "conv"


class DispatchTableError(ValueError):
    """A dispatch table file that cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class ValidationRow:
    """One measured (op, capability, precision, shape class) on a GPU.

    Attributes:
        op: the public op, e.g. ``"pyr_level"`` or ``"large_kernel_conv2d"``.
        device: the GPU's name, as ``torch.cuda.get_device_name`` gives it.
        capability: ``"major.minor"``, e.g. ``"9.0"``; the key rows are matched on.
        precision: ``"float32"``, ``"tf32"``, ``"bfloat16"``, ``"float16"`` or ``"float64"``.
        shape_class: what the op's ``*_shape_class`` function returns for the measured inputs.
        torch: the torch version measured with.
        triton: the triton version measured with.
        date: when, ``YYYY-MM-DD HH:MM UTC``.
        correct: whether Triton's outputs (and gradients) matched the reference's tolerance.
        speedup: reference median time over Triton median time (> 1: Triton faster).
    """

    op: str
    device: str
    capability: str
    precision: str
    shape_class: str
    torch: str
    triton: str
    date: str
    correct: bool
    speedup: float

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What a dispatch decision matches: ``(op, capability, precision, shape_class)``."""
        return (self.op, self.capability, self.precision, self.shape_class)

    @property
    def wins(self) -> bool:
        """Whether this row sends its key to Triton: correct and faster."""
        return self.correct and self.speedup > 1.0


def _row_from_dict(entry: object, path: Path, index: int) -> ValidationRow:
    """Parse one row, raising :class:`DispatchTableError` that names the file and the row."""
    names = [f.name for f in fields(ValidationRow)]
    where = f"dispatch table {path}, row {index}"
    if not isinstance(entry, dict):
        raise DispatchTableError(f"{where}: expected an object with keys {names}, got "
                                 f"{type(entry).__name__}")
    missing = [n for n in names if n not in entry]
    extra = sorted(set(entry) - set(names))
    if missing or extra:
        raise DispatchTableError(f"{where}: missing keys {missing}, unknown keys {extra}; "
                                 f"a row has exactly {names}")
    for f in fields(ValidationRow):
        value = entry[f.name]
        if f.type == "bool":
            ok = isinstance(value, bool)
        elif f.type == "float":
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value) and value > 0)
        else:
            ok = isinstance(value, str) and value != ""
        if not ok:
            expected = {"bool": "true or false", "float": "a positive finite number"}.get(
                f.type, "a non-empty string")
            raise DispatchTableError(f"{where}: {f.name} must be {expected}, got {value!r}")
    return ValidationRow(**entry)


def load_table(path: str | Path) -> tuple[ValidationRow, ...]:
    """Read and validate a dispatch table file.

    Args:
        path: a JSON file ``{"rows": [...]}``; see the module docstring for a row.

    Returns:
        The rows, in file order.

    Raises:
        DispatchTableError: if the file cannot be read, is not JSON, or a row is malformed; the
            message names the file (fix it, or regenerate it with ``python -m benchmarks.gpu``).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DispatchTableError(
            f"cannot read dispatch table {path}: {error}; restore it from git or regenerate it "
            "with `python -m benchmarks.gpu` on a GPU"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise DispatchTableError(f"dispatch table {path} must be a JSON object "
                                 '{"rows": [...]}; restore it from git')
    rows = tuple(_row_from_dict(e, path, i) for i, e in enumerate(data["rows"]))
    keys = [r.key for r in rows]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise DispatchTableError(f"dispatch table {path}: keys {duplicates} appear more than "
                                 "once; keep one row per (op, capability, precision, shape_class)")
    return rows


@functools.cache
def family_rows(family: OpFamily | str, directory: str | None = None) -> tuple[ValidationRow, ...]:
    """The rows of a family's shipped table (read once per process; no file means no rows).

    Args:
        family: an :class:`OpFamily` or its value.
        directory: the table folder; default :data:`TABLE_DIR`, or ``FLOWKIT_DISPATCH_TABLES``.

    Raises:
        DispatchTableError: for a malformed file.
    """
    folder = Path(directory or os.environ.get("FLOWKIT_DISPATCH_TABLES") or TABLE_DIR)
    path = folder / f"{OpFamily(family).value}.json"
    return load_table(path) if path.exists() else ()


def validated_row(
    rows: Iterable[ValidationRow], op: str, capability: str, precision: str, shape_class: str
) -> ValidationRow | None:
    """The row that sends this call to Triton (correct and faster), else ``None``."""
    key = (op, capability, precision, shape_class)
    return next((r for r in rows if r.key == key and r.wins), None)


def size_class(numel: int) -> str:
    """A power-of-4 bucket of an element count: ``"n<=2^14"``, ``"n<=2^16"``, ...,
    ``"n>2^28"``; the shape classes of the ops are built from it.

    Example:
        >>> size_class(2 * 16 * 256 * 256), size_class(1)
        ('n<=2^22', 'n<=2^14')
    """
    if isinstance(numel, torch.SymInt):  # a dynamic size being traced (torch.export):
        return _SYMBOLIC_SIZE_CLASS  # no row has it, so the reference runs, size unfixed
    log2 = max(_MIN_LOG2, math.ceil(math.log2(max(numel, 1))))
    log2 += log2 % 2
    return f"n>2^{_MAX_LOG2}" if log2 > _MAX_LOG2 else f"n<=2^{log2}"


def merge_rows(
    old: Sequence[ValidationRow], new: Sequence[ValidationRow]
) -> tuple[ValidationRow, ...]:
    """``old`` with every key measured in ``new`` replaced by the new row, sorted by key."""
    merged = {r.key: r for r in old}
    merged.update({r.key: r for r in new})
    return tuple(merged[k] for k in sorted(merged))


def write_table(path: str | Path, rows: Sequence[ValidationRow]) -> None:
    """Write ``rows`` as a dispatch table, atomically (a reader never sees half a file).

    Raises:
        DispatchTableError: if two rows share a key.
    """
    path = Path(path)
    keys = [r.key for r in rows]
    if len(set(keys)) != len(keys):
        raise DispatchTableError(f"two rows for one key in the table for {path}; merge_rows first")
    text = json.dumps({"rows": [asdict(r) for r in rows]}, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
