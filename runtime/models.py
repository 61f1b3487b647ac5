"""Request models and types every service's API shares: strict bodies, and no NUL characters
anywhere (PostgreSQL text cannot hold them, so they are refused as bad input, not stored)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


def reject_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


Text = Annotated[str, AfterValidator(reject_nul)]
"""A string query parameter (bodies are covered by StrictModel)."""


class StrictModel(BaseModel):
    """A request body: unknown fields refused, strings trimmed, no NUL at any depth."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _contains_nul(value):
            raise ValueError("NUL characters are not allowed")
        return value
