"""Dates and numbers of a request are what they say: pydantic alone reads 0 or "0" as the date
1 January 1970 (a Unix time) and true or false as the number 1 or 0; the fuzzer sent both, and the
services answered 200 with a date or a score nobody meant."""

from __future__ import annotations

from datetime import date

import pydantic
import pytest
from pydantic import Field

from runtime.models import Day, Flag, Line, StrictModel


class Wish(StrictModel):
    day: Day
    score: float = 0.0
    hours: int | None = None
    wanted: Flag = False


@pytest.mark.parametrize("written", ['0', '"0"', '1700000000', '"2031-01-01T00:00"', '"01.02.2031"'])
def test_a_date_is_only_ever_written_yyyy_mm_dd(written: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="YYYY-MM-DD"):
        Wish.model_validate_json(f'{{"day": {written}}}')


def test_a_date_written_yyyy_mm_dd_is_that_date() -> None:
    assert Wish.model_validate_json('{"day": "2031-02-28"}').day == date(2031, 2, 28)
    assert Wish.model_validate({"day": date(2031, 2, 28)}).day == date(2031, 2, 28)


@pytest.mark.parametrize("field", ["score", "hours"])
@pytest.mark.parametrize("value", ["true", "false"])
def test_true_or_false_is_no_number(field: str, value: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="true or false"):
        Wish.model_validate_json(f'{{"day": "2031-02-28", "{field}": {value}}}')


def test_a_flag_takes_true_and_false_and_numbers_take_numbers() -> None:
    wish = Wish.model_validate_json('{"day": "2031-02-28", "score": 0.5, "hours": 40, "wanted": true}')
    assert (wish.score, wish.hours, wish.wanted) == (0.5, 40, True)


class Note(StrictModel):
    title: Line(20)
    text: str = Field(default="", max_length=30)


@pytest.mark.parametrize("field, limit", [("title", 20), ("text", 30)])
def test_a_text_is_measured_as_sent_not_after_trimming(field: str, limit: int) -> None:
    """The API's schema says maxLength of the text as sent; pydantic measured it after trimming, so
    a text one character too long with a space at its end was taken (the fuzzer found it)."""
    with pytest.raises(pydantic.ValidationError, match=f"at most {limit} characters"):
        Note.model_validate({"title": "T", field: "x" * limit + " "})
    trimmed = Note.model_validate({"title": "T", field: " " + "x" * (limit - 2) + " "})
    assert getattr(trimmed, field) == "x" * (limit - 2)
