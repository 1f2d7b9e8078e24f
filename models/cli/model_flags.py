"""``flowkit train``'s model flags, generated from the registered models' constructors: every
keyword a model takes is a flag (``num_stack`` -> ``--num-stack``), typed by its annotation,
with the help of the model's docstring."""

from __future__ import annotations

import argparse
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from ..base import MODELS, AnomalyModel

__all__ = ["DATA_KEYS", "add_model_flags", "model_config_keys", "model_flag_values"]

DATA_KEYS = frozenset({"image_size"})
"""Constructor keywords set from the data settings (``--image-size``), never a flag of their own."""

_ARG_LINE = re.compile(r"^\s{4}(\w+): (.*)$")
_SCALAR_TYPES: tuple[type, ...] = (bool, int, float, str)
_ROLE = re.compile(r":\w+:`~?([\w.]+)`")  # Sphinx roles such as :class:`MapMode`


def _argument_docs(cls: type[AnomalyModel]) -> dict[str, str]:
    """The ``Args:`` section of the class docstring (Google style), one line per keyword."""
    docs: dict[str, str] = {}
    lines = iter((inspect.getdoc(cls) or "").splitlines())
    for line in lines:
        if line.strip() == "Args:":
            break
    name = None
    for line in lines:
        if not line.strip() or not line.startswith(" "):
            break
        match = _ARG_LINE.match(line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif name is not None:
            docs[name] += " " + line.strip()
    return docs


def _scalar_type(annotation: Any) -> type | None:
    """``int``, ``float``, ``bool`` or ``str`` of an annotation (``X | None`` counts as ``X``);
    ``None`` for anything else (tuples, unions of several types)."""
    if annotation in _SCALAR_TYPES:
        return annotation
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    return options[0] if len(options) == 1 and options[0] in _SCALAR_TYPES else None


def _keywords() -> dict[str, tuple[type, list[str], list[str], list[Any]]]:
    """Every constructor keyword of the registered models: its type, the models that take it,
    their docs and their defaults."""
    found: dict[str, tuple[type, list[str], list[str], list[Any]]] = {}
    for name in sorted(MODELS):
        cls = MODELS[name]
        hints = typing.get_type_hints(cls.__init__)
        docs = _argument_docs(cls)
        for key, parameter in inspect.signature(cls).parameters.items():
            kind = _scalar_type(hints.get(key))
            if key in DATA_KEYS or kind is None or parameter.kind is parameter.VAR_KEYWORD:
                continue
            entry = found.setdefault(key, (kind, [], [], []))
            entry[1].append(name)
            entry[2].append(docs.get(key, ""))
            entry[3].append(parameter.default)
    return found


def model_config_keys() -> list[str]:
    """The constructor keywords that are flags."""
    return sorted(_keywords())


def _help(models: list[str], docs: list[str], defaults: list[Any]) -> str:
    """``model: doc (default: value)`` for each model taking the keyword; ``%`` escaped."""
    parts = [f"{model}: {doc or 'see its docstring'} (default: {default})"
             for model, doc, default in zip(models, docs, defaults, strict=True)]
    text = "; ".join(parts).replace("%", "%%").replace("``", "")
    return _ROLE.sub(r"\1", text)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per constructor keyword of the registered models (see the module docstring);
    unset flags are ``None``, so the model's (or the category's) default applies."""
    group = parser.add_argument_group(
        "model settings (generated from the models' constructors; default: the model's for "
        "the category; a flag the chosen model does not take is refused)")
    for key, (kind, models, docs, defaults) in _keywords().items():
        flag = "--" + key.replace("_", "-")
        options: dict[str, Callable[..., Any] | Any] = (
            {"action": argparse.BooleanOptionalAction} if kind is bool
            else {"type": kind, "metavar": key.split("_")[-1].upper()})
        group.add_argument(flag, dest=key, help=_help(models, docs, defaults), **options)


def model_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags given on the command line, by constructor keyword."""
    return {key: getattr(args, key) for key in model_config_keys()
            if getattr(args, key, None) is not None}
