"""The filter clause the search functions write, read as text: where a plan depends on how a clause
is written, a later migration that rewrites either function must not lose that plan silently. The
answers are checked elsewhere (the property and count tests); these check the form."""

from __future__ import annotations

import asyncpg
import pytest

from runtime.db import tenant_transaction

TENANT = "lueneburg"


async def _where(pool: asyncpg.Pool, filters: dict, text_column: str | None) -> str:
    async with tenant_transaction(pool, TENANT) as conn:
        return await conn.fetchval("SELECT offer_search_where($1::jsonb, $2)", filters, text_column)


async def _formats(pool: asyncpg.Pool, formats: list[str]) -> str:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT search_in_clause('format', $1::jsonb)", formats)


@pytest.mark.parametrize("formats", [["online"], ["online", "hybrid"]])
@pytest.mark.parametrize("near", [{}, {"lat": 51.51, "lon": 7.47, "radius_km": 50}])
async def test_with_a_text_the_format_is_checked_on_the_texts_hits(
        catalog_pool: asyncpg.Pool, formats: list[str], near: dict) -> None:
    # migration 0020: an index read of the formats cost 47-170 ms at a million offers where checking
    # each of the text's hits cost a few; "(…) IS TRUE" keeps any index from answering the clause
    clause = await _formats(catalog_pool, formats)
    where = await _where(catalog_pool, {"q": "python", "formats": formats} | near, "search")
    assert f"({clause}) IS TRUE" in where, where
    assert f" AND {clause}" not in where.replace(f"({clause}) IS TRUE", ""), where


async def test_without_a_text_the_format_stays_answerable_by_its_index(catalog_pool: asyncpg.Pool) -> None:
    # the filter-only walk skips to a format through offers_filter_walk (migration 0017)
    clause = await _formats(catalog_pool, ["online"])
    for filters, text_column in (({"formats": ["online"]}, "search"), ({"q": "python", "formats": ["online"]}, None)):
        where = await _where(catalog_pool, filters, text_column)
        assert f" AND {clause}" in where and "IS TRUE" not in where, where


@pytest.mark.parametrize("text_column", ["search", "search_title"])
async def test_with_a_text_each_filter_is_also_asked_of_the_texts_index(
        catalog_pool: asyncpg.Pool, text_column: str) -> None:
    # migration 0022: "Pflege" with a qualification none of its 41,000 hits has read all of them to
    # count nothing (33 ms); the filter's words in the text's index answer it with the text
    filters = {"q": "pflege", "formats": ["online", "hybrid"], "schedules": ["evening"],
               "qualifications": ["language"]}
    where = await _where(catalog_pool, filters, text_column)
    assert "o.filter_words && '{format:online,format:hybrid}'::text[]" in where, where
    assert "o.filter_words && '{schedule:evening}'::text[]" in where, where
    assert "o.filter_words && '{qualification:language}'::text[]" in where, where


async def test_without_a_text_no_filter_is_asked_as_words(catalog_pool: asyncpg.Pool) -> None:
    # the walks and the filter-only search read B-trees (0017); the words are in the text's indexes only
    filters = {"formats": ["online"], "schedules": ["evening"], "qualifications": ["language"]}
    for f, text_column in ((filters, "search"), (filters | {"q": "pflege"}, None)):
        assert "filter_words" not in await _where(catalog_pool, f, text_column)


async def test_with_a_text_a_start_window_is_also_asked_as_its_months(catalog_pool: asyncpg.Pool) -> None:
    # migration 0024: the months of the window, words of `reach` in the text's indexes
    window = {"start_from": "2027-11-15", "start_to": "2028-02-03"}
    where = await _where(catalog_pool, {"q": "pflege"} | window, "search")
    assert "o.reach && '{m202711,m202712,m202801,m202802}'::text[]" in where, where
    for filters, text_column in (({"q": "pflege", "start_from": "2027-11-15"}, "search"),  # open: no list
                                 ({"q": "pflege", "start_from": "2027-01-01", "start_to": "2030-01-01"}, "search"),
                                 (window, "search"), ({"q": "pflege"} | window, None)):
        assert "'{m" not in await _where(catalog_pool, filters, text_column), filters
