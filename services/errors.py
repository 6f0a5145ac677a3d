"""Errors shared across services that the API turns into HTTP answers."""


class NotFound(LookupError):
    """No such candidate, robot, user or record."""
