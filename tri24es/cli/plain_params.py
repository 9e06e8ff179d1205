"""Option values that need no more than a call to parse, parsed without pydantic.

typer 0.29 coerces every option through a pydantic ``TypeAdapter`` that it builds on the
option's first use, even for an option left at its default (``--db`` unset, ``--help`` not
given). Importing pydantic and building the adapters costs a read command (``status``,
``spend``) about a third of its start-up. The options of this command line are nearly all
plain ``str``, ``int``, ``float``, ``bool`` and ``Path`` values (numbers in a range); for those,
``install`` makes typer's coercion of those a call of the type. Anything else (choices, ranges,
lists, paths that must exist) keeps typer's own.

This reaches into typer's private ``_runtime_param``: the test of start-up imports
(``tests/test_cli_startup.py``) fails if a typer release changes it under us.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer._click.exceptions import BadParameter
from typer._coercion import RuntimeParam
from typer._param_types import coerce_cli_path
from typer.core import _TyperParameter

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{_shown(value)} is not a valid boolean (true or false)")


#: The most a whole-number option holds: what SQLite and the log's JSON keep (64 bits). A
#: larger one would be a traceback where it is stored, or, kept in the log, at every read.
LARGEST_INT = 2**63 - 1
#: A whole number as pydantic took one: ASCII digits (``_`` between them), signed, and a
#: fraction of zeros (``2.0``); not ``1e3``, ``0x10`` or other scripts' digits.
_WHOLE = re.compile(r"\s*([+-]?[0-9](?:_?[0-9])*)(?:\.0+)?\s*")


def _shown(value: Any) -> str:
    """The value in an error message, cut short: a line, however long the value."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = _WHOLE.fullmatch(str(value))
        if match is None:
            raise ValueError(f"{_shown(value)} is not a whole number")
        digits = match[1].replace("_", "").lstrip("+-").lstrip("0")
        if len(digits) > len(str(LARGEST_INT)):  # before int(): 4,300 digits are refused
            raise ValueError(f"{_shown(value)} is out of range (at most {LARGEST_INT})")
        number = int(match[1])
    if abs(number) > LARGEST_INT:
        raise ValueError(f"{_shown(value)} is out of range (at most {LARGEST_INT})")
    return number


def _float(value: Any) -> float:
    if isinstance(value, str) and not value.isascii():  # float() takes other scripts' digits
        raise ValueError(f"{_shown(value)} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{_shown(value)} is not a number") from None
    if not math.isfinite(number):  # NaN passes any range check, and no option means either
        raise ValueError(f"{_shown(value)} is not a finite number")
    return number


def _str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = str(value)
    try:  # bytes of an argument that are not UTF-8 come as lone surrogates (surrogateescape):
        text.encode()  # no store, JSON or terminal takes them (a traceback where one met them)
    except UnicodeEncodeError:
        raise ValueError(f"{_shown(text)} is not UTF-8 text") from None
    return text


#: annotation -> how a command-line value becomes one
CONVERTERS = {str: _str, int: _int, float: _float, bool: _bool}


@dataclass(frozen=True)
class PlainParam(RuntimeParam):
    """A value converted by a call, its error a ``BadParameter`` like typer's own."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            if self.annotation is Path:
                # typer's own checks (readable, a file or a folder), given a Path: it only
                # builds an adapter for a value that is not one yet
                return coerce_cli_path(Path(value), self.parameter_info, path_type=Path,
                                       param=param, ctx=ctx)
            converted = CONVERTERS[self.annotation](value)
            return self._in_range(converted) if self.annotation in (int, float) else converted
        except ValueError as e:
            raise BadParameter(str(e), ctx=ctx, param=param) from None


    def _in_range(self, number: Any) -> Any:
        low, high = self.parameter_info.min, self.parameter_info.max
        if self.parameter_info.clamp:
            return max(low, number) if low is not None and number < low else (
                min(high, number) if high is not None and number > high else number)
        if low is not None and number < low:
            raise ValueError(f"{number} is less than the minimum, {low}")
        if high is not None and number > high:
            raise ValueError(f"{number} is more than the maximum, {high}")
        return number


def _is_plain(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.file_annotation is not None:
        return False
    info = descriptor.parameter_info
    if info.parser is not None:
        return False
    if descriptor.annotation is Path:
        return not (info.exists or info.resolve_path or info.allow_dash or info.path_type)
    return descriptor.annotation in CONVERTERS


def install() -> None:
    """Make typer build a ``PlainParam`` for every plain option (the ``--help`` flags too,
    which are made per context), and its own coercion for the others."""
    if getattr(_TyperParameter.get_runtime_param, "plain", False):
        return
    typers_own = _TyperParameter.get_runtime_param

    def get_runtime_param(param: _TyperParameter) -> RuntimeParam:
        if param._runtime_param is None and _is_plain(param):
            descriptor = param.type_descriptor
            param._runtime_param = PlainParam(parameter_info=descriptor.parameter_info,
                                              annotation=descriptor.annotation)
        return typers_own(param)

    get_runtime_param.plain = True  # type: ignore[attr-defined]
    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign,assignment]
