"""The one exception type for mistakes a user can fix.

The CLI prints a ``TransferError`` as a short paragraph and exits non-zero with
no traceback; anything else is a bug and keeps its traceback.

Example:
    >>> raise TransferError("Data folder not found: 'flowers/'.",
    ...                     fix="Pass --data with an existing folder.")
"""

from __future__ import annotations


class TransferError(Exception):
    """A user error: says what happened, what was expected and how to fix it."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} {fix}")
