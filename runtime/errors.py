"""Errors a use case raises about the thing asked for; the HTTP layer answers them as 404, 409 and 413."""


class NotFound(Exception):
    """Nothing by that id in the acting tenant's view (message: what was looked for)."""


class Conflict(Exception):
    """The request clashes with the current state (message: why)."""


class EventTooLarge(Exception):
    """The change would make an event larger than the broker accepts (message: which and how large).
    Refused when the outbox row is written, so no such row can ever block the relay."""
