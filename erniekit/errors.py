"""User-facing errors: the CLI prints them as one line (no traceback) and exits with status 2.

Raise a subclass whenever the cause is the user's input (a recipe, a data file, a checkpoint) and the
message can name the file, line or key to fix. Bugs stay ordinary exceptions with full tracebacks.
"""


class ErniekitError(Exception):
    """Base class of errors caused by user input."""


class DataError(ErniekitError, ValueError):
    """A data file or record is malformed; the message names the file and line."""


class CheckpointError(ErniekitError, ValueError):
    """A checkpoint or model directory cannot be used; the message names the file and tensor."""
