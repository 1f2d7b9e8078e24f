"""``flowkit export RUN --format onnx|torchscript|exported``: a run's maps and scores as a
program that runs without flowkit."""

from __future__ import annotations

import argparse

from ..engine.export import ExportFormat, default_export_path, export_run
from ..engine.signals import StopSignals
from .common import add_common_flags, single_process

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = (
    "Export checkpoints/final.pt of a run: images [B, 3, H, W] (RGB in [0, 1], the run's "
    "size, any batch) -> maps [B, 1, H, W] and scores [B]. The program is run at batch sizes "
    "1 and 3 and compared with flowkit before it is written; the thresholds stay in the run's "
    "threshold.json. onnx needs: pip install \"flowkit[export]\"."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flowkit export``."""
    add_common_flags(parser)
    parser.add_argument("run_dir", metavar="RUN", help="a run folder of `flowkit train`")
    parser.add_argument("--format", required=True, choices=[f.value for f in ExportFormat],
                        help="onnx (ONNX Runtime), torchscript (torch.jit.load) or exported "
                        "(torch.export, a .pt2 for torch.export.load)")
    suffixes = ", ".join(default_export_path("RUN", f).name for f in ExportFormat)
    parser.add_argument("--out", metavar="FILE",
                        help=f"the file to write (default in RUN/export/: {suffixes})")


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit export RUN --format F``: prints the path written."""
    single_process("export")
    print(export_run(args.run_dir, args.format, args.out))
    return 0
