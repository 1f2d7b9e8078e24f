"""The ``flowkit`` command line: one entry point, one module per subcommand.

``flowkit train`` trains a registered model (on one process, or several under ``torchrun``)
and evaluates the final one on the test split (:mod:`.train`), ``flowkit eval RUN``
recomputes a run's metrics from its final checkpoint (:mod:`.eval`), ``flowkit predict RUN
IMAGES --out DIR`` writes anomaly maps, overlays and verdicts for new images (:mod:`.predict`),
``flowkit export RUN --format onnx|torchscript|exported`` writes them as a program (:mod:`.export`),
``flowkit summary OUT`` writes the mean ± std of every metric over the seed runs of ``flowkit
train --seeds`` (:mod:`.summary`),
and ``flowkit data synth`` writes the synthetic dataset to disk in the MVTec-AD layout
(:mod:`.data`). Each module has ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args, stop)``; only the module of the command given is imported, so ``flowkit --help``
starts without PyTorch.

Expected failures (a missing dataset folder, an unreadable image, an image size the model
cannot take, a bad checkpoint, an existing run folder, a NaN loss, running out of memory,
a bad flag) print one ``error:`` line naming the problem and the fix, and exit with code 2; a
bug exits with 1. ``--debug`` adds the traceback. SIGINT (Ctrl-C) and SIGTERM stop training
after the current step with a checkpoint to resume from, and exit with 130 and 143. Models
from other packages join the ``--model`` choices when their modules are listed,
comma-separated, in the environment variable ``FLOWKIT_MODEL_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Collection, Sequence
from types import ModuleType
from typing import NoReturn

from flowkit._version import __version__

__all__ = [
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_SIGNAL_BASE",
    "EXIT_UNEXPECTED",
    "build_parser",
    "main",
]

COMMANDS = {
    "train": "train a model, then evaluate the final one",
    "eval": "recompute a run's metrics from its final checkpoint",
    "predict": "anomaly maps and verdicts for new images",
    "export": "a run's maps and scores as ONNX, TorchScript or torch.export",
    "summary": "mean ± std of every metric over a job's seed runs (train --seeds)",
    "data": "datasets",
}
"""The subcommands, each a module of this package, with its one-line help."""

EXIT_ERROR = 2
"""An expected failure the user can fix (also a bad flag)."""
EXIT_UNEXPECTED = 1
EXIT_SIGNAL_BASE = 128
"""Plus the signal number: 130 after SIGINT, 143 after SIGTERM (the shell's convention)."""
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + 2  # SIGINT before the handlers are in place


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, with where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"error: {message}; see {self.prog} --help\n")


def _command_module(name: str) -> ModuleType:
    """The module of the subcommand ``name``."""
    return importlib.import_module(f".{name}", __name__)


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a flag), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser.

    Args:
        commands: the subcommands whose flags are added (their modules are imported);
            ``None``: all of them. The others are only listed, for the top-level help.

    Raises:
        ConfigError: a module of ``FLOWKIT_MODEL_MODULES`` that cannot be imported.
    """
    parser = _Parser(
        prog="flowkit",
        description="Invertible networks for PyTorch, and anomaly-localization models on them.",
    )
    parser.add_argument("--version", action="version", version=f"flowkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        if commands is None or name in commands:
            from .common import import_model_modules

            import_model_modules()
            module = _command_module(name)
            sub.description = module.DESCRIPTION
            sub.set_defaults(run=module.run)
            module.add_arguments(sub)
    return parser


def _one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _rank_prefix() -> str:
    """``"rank N: "`` for the processes after the first of a torchrun job, else ``""``."""
    rank = int(os.environ.get("RANK", "0"))
    return f"rank {rank}: " if rank else ""


def _report(error: Exception, debug: bool) -> int:
    """Print an error as one line; the exit code (2: the user can fix it, 1: a bug)."""
    from ..data import DatasetError
    from ..errors import AppError

    if debug:
        traceback.print_exc()
    if isinstance(error, (AppError, DatasetError)):
        print(f"{_rank_prefix()}error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{_rank_prefix()}error: unexpected {type(error).__name__}: {_one_line(error)} "
          "(a bug; rerun with --debug for the traceback and report it)", file=sys.stderr)
    return EXIT_UNEXPECTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    from ..errors import Interrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        parser = build_parser(COMMANDS.keys() & {_command_of(argv)})
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        from ..engine.signals import StopSignals

        with StopSignals() as stop:
            return args.run(args, stop)
    except Interrupted as stopped:  # rank 0 reports what every process did
        if not _rank_prefix():
            print(_one_line(stopped), file=sys.stderr)
        return EXIT_SIGNAL_BASE + stopped.signal_number
    except KeyboardInterrupt:
        print("error: interrupted; a training run continues from its last checkpoint with "
              "--resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        return _report(error, args is not None and getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
