"""Errors a use case raises about the thing asked for; the HTTP layer answers them as 404 and 409."""


class NotFound(Exception):
    """Nothing by that id in the acting tenant's view (message: what was looked for)."""


class Conflict(Exception):
    """The request clashes with the current state (message: why)."""
