"""User-facing errors: the CLI prints them as one line (no traceback) and exits with status 2.

Raise a subclass whenever the cause is the user's input (a recipe, a data file, a checkpoint) and the
message can name the file, line or key to fix. Bugs stay ordinary exceptions with full tracebacks.
``Interrupted`` is the one non-error here: a stop on request (Ctrl-C, SIGTERM), exit status 128 + signal.
"""


class ErniekitError(Exception):
    """Base class of errors caused by user input."""


class DataError(ErniekitError, ValueError):
    """A data file or record is malformed; the message names the file and line."""


class CheckpointError(ErniekitError, ValueError):
    """A checkpoint or model directory cannot be used; the message names the file and tensor."""


class Interrupted(KeyboardInterrupt):
    """A signal stopped the job after its last step was saved; the CLI exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
