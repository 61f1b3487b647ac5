"""Identifiers for new rows and events."""

from __future__ import annotations

import uuid

from uuid6 import uuid7


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so each new row's primary key and every index led by it is written at
    the end of the index instead of at a random page (an import of 5,000 offers into 1,000,000 with
    random UUIDs spent a quarter longer in its INSERTs). 74 random bits keep it unguessable enough for
    an id; nothing here relies on an id being secret."""
    return uuid7()
