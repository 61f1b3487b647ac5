"""What a request's text may hold: one definition of a line for every service."""

import sys
import unicodedata

import pytest
from pydantic import ValidationError

from runtime.models import multi_line, single_line
from services.catalog.domain import OfferIn
from tests.platform import offer_body

LINE_BREAKS = "\t\n\r"


def _refused(check, text: str) -> bool:
    try:
        check(text)
    except ValueError:
        return True
    return False


def test_a_line_refuses_exactly_the_control_characters_and_the_unicode_line_breaks():
    """Every code point against Unicode's own categories (Cc, Zl, Zp): the reference the check's
    character class must equal."""
    wrong = []
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:  # lone surrogates: refused as unstorable, tested in test_hostile_input
            continue
        c = chr(code)
        control = unicodedata.category(c) in ("Cc", "Zl", "Zp")
        if _refused(single_line, f"a{c}b") != (control or c == "\x00"):
            wrong.append(("line", hex(code)))
        if _refused(multi_line, f"a{c}b") != ((control and c not in LINE_BREAKS) or c == "\x00"):
            wrong.append(("paragraphs", hex(code)))
    assert wrong == []


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\n", "\x1b"])
def test_an_offers_title_is_one_line_by_the_same_rule(separator):
    """The catalog's titles follow the platform's rule: a line separator (U+2028) or a C1 control
    (NEL) breaks a line as a newline does."""
    provider = "0190a7e2-0000-7000-8000-000000000001"
    with pytest.raises(ValidationError) as refused:
        OfferIn.model_validate(offer_body(provider, title=f"Gabelstapler{separator}Grundkurs"))
    assert [e["loc"] for e in refused.value.errors()] == [("title",)]
    assert OfferIn.model_validate(offer_body(provider, title="Gabelstapler – Grundkurs „Flurförderzeuge“")).title
