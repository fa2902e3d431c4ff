"""The one exception type users see: a clear message, never a traceback for bad input."""


class ObliviateError(Exception):
    """Bad input or an impossible request, with a message that says how to fix it."""
