"""Request models and bounded types every service's API shares. Every field of a request is typed
and bounded: strings have a length and, on one line, no control characters (a line break in a mail
subject or a header breaks what is built from it); lists have a length; booleans are strict; numbers
are finite. No NUL characters and no lone surrogates anywhere (PostgreSQL text cannot hold either,
so they are refused as bad input, not met as a 500 when stored)."""

from __future__ import annotations

import re
import types
from datetime import date
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from annotated_types import Len
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)


def _unstorable(value: str) -> str | None:
    """Why PostgreSQL could not store this text, or None."""
    if "\x00" in value:
        return "NUL characters are not allowed"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogates are not allowed (the text is not valid Unicode)"
    return None


def _find_unstorable(value: Any) -> str | None:
    if isinstance(value, str):
        return _unstorable(value)
    if isinstance(value, dict):
        for k, v in value.items():
            if reason := _find_unstorable(k) or _find_unstorable(v):
                return reason
    elif isinstance(value, list | tuple):
        for v in value:
            if reason := _find_unstorable(v):
                return reason
    return None


# Unicode's categories Cc (the C0 and C1 controls, U+0000-U+001F and U+007F-U+009F), Zl (U+2028) and
# Zp (U+2029, a line break all the same): each is exactly these code points, a stability guarantee of
# Unicode, so one character class finds them (a check per character in Python took 100 times as long).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROLS_BUT_LINE_BREAKS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")  # \t \n \r allowed


def single_line(value: str) -> str:
    if reason := _unstorable(value):
        raise ValueError(reason)
    if _CONTROLS.search(value):
        raise ValueError("line breaks and control characters are not allowed here")
    return value


def multi_line(value: str) -> str:
    if reason := _unstorable(value):
        raise ValueError(reason)
    if _CONTROLS_BUT_LINE_BREAKS.search(value):
        raise ValueError("control characters other than line breaks and tabs are not allowed")
    return value


def Line(max_length: int = 200, *, min_length: int = 0) -> Any:  # noqa: N802 (a type factory)
    """One line of text (a title, a name, a label): trimmed, bounded, no control characters."""
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
                     AfterValidator(single_line)]


def Paragraphs(max_length: int = 20_000, *, min_length: int = 0) -> Any:  # noqa: N802
    """Multi-line text (a description): bounded; line breaks and tabs allowed, other controls not."""
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
                     AfterValidator(multi_line)]


def Items(item: Any, max_length: int = 100, *, min_length: int = 0) -> Any:  # noqa: N802
    """A list with a bounded number of items."""
    return Annotated[list[item], Len(min_length, max_length)]


Flag = StrictBool
"""A boolean that is `true` or `false` in JSON, never `"yes"`, `1` or `"off"`."""

_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_day(value: Any) -> Any:
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DAY.fullmatch(value)):
        return value
    raise ValueError("a date is written YYYY-MM-DD")


Day = Annotated[date, BeforeValidator(_iso_day)]
"""A date written YYYY-MM-DD and nothing else: pydantic alone also reads 0 or "0" as a Unix time,
1 January 1970, so a number slipped in where a date belongs became a date nobody meant."""

Text = Line(500)
"""A string query parameter: one bounded line."""


class StrictModel(BaseModel):
    """A request body: unknown fields refused, strings trimmed, numbers finite, and no NUL or lone
    surrogate at any depth (also inside fields typed loosely)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name not in _admitting_bools(cls):
            # pydantic alone takes true and false for 1 and 0 in a number field
            raise ValueError("true or false is not a value of this field")
        if isinstance(value, str) and len(value) > _max_lengths(cls).get(info.field_name, len(value)):
            # the length as sent, as the API's schema states it: pydantic checks it after trimming
            raise ValueError(f"at most {_max_lengths(cls)[info.field_name]} characters")
        if info.field_name in _checked_inside(cls):
            return value
        if reason := _find_unstorable(value):
            raise ValueError(reason)
        return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _admits_bool(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_admits_bool(arg) for arg in get_args(annotation))
    return False


@cache
def _max_lengths(model: type[StrictModel]) -> dict[str, int]:
    """Each text field's greatest length, from its Field and its type's constraints alike."""
    limits = {}
    for name, f in model.model_fields.items():
        found = [m.max_length for m in f.metadata if getattr(m, "max_length", None) is not None]
        if found:
            limits[name] = min(found)
    return limits


@cache
def _admitting_bools(model: type[StrictModel]) -> frozenset[str]:
    """The fields a boolean is a value of (flags, and fields typed loosely)."""
    return frozenset(name for name, f in model.model_fields.items() if _admits_bool(f.annotation))


def _strict_models_only(annotation: Any) -> bool:
    """Whether every value this annotation admits is a StrictModel (or a list of them, or None)."""
    if isinstance(annotation, type):
        return issubclass(annotation, StrictModel) or annotation is type(None)
    origin = get_origin(annotation)
    if origin is Annotated:
        return _strict_models_only(get_args(annotation)[0])
    if origin in (list, tuple, Union, types.UnionType):
        return all(arg is Ellipsis or _strict_models_only(arg) for arg in get_args(annotation))
    return False


@cache
def _checked_inside(model: type[StrictModel]) -> frozenset[str]:
    """The fields holding StrictModels, which check every text of their own: walking them here too
    walked an import's every session and place three times (a fifth of its CPU in Python)."""
    return frozenset(name for name, f in model.model_fields.items() if _strict_models_only(f.annotation))
