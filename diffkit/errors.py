"""The one error type for user mistakes and conditions a user can fix.

The CLI prints a ``DiffkitError`` as one red line and exits with code 2; anything else is a bug
and keeps its traceback.
"""


class DiffkitError(Exception):
    """A problem the user can act on (bad option, missing path, offline, exhausted source...)."""

    exit_code = 2


class NotBuiltError(DiffkitError):
    """A capability that this version of diffkit does not have yet."""
