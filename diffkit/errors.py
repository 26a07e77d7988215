"""The one error type for user mistakes and conditions a user can fix.

The CLI prints a ``DiffkitError`` as one red line and exits with code 2; anything else is a bug
and keeps its traceback.
"""


class DiffkitError(Exception):
    """A problem the user can act on (bad option, missing path, offline, exhausted source...)."""

    exit_code = 2


class WriteError(DiffkitError, OSError):
    """A file could not be written (disk full, read-only, permissions). Still an ``OSError``, so code
    that handles ``errno`` (for example ENOSPC) keeps working; the message names the file."""
