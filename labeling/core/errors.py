"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class ClalaError(Exception):
    """Bad input or an unusable database; the message names the file, row or field."""


class InputError(ClalaError):
    """An input file or value that cannot be used as given."""


class StoreError(ClalaError):
    """The database cannot be opened or written as asked."""
