"""User-facing errors: each names the bad input and how to fix it.

`train.py` and `predict.py` print a `TenfoldError` as one line and exit non-zero; anything else is
a bug and keeps its traceback.
"""


class TenfoldError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(TenfoldError):
    """A config file, key or value is missing, malformed or of the wrong type."""


class DataError(TenfoldError):
    """A dataset root, split or file is missing, empty or unreadable."""


class CheckpointError(TenfoldError):
    """A checkpoint or export file is missing, truncated or incompatible."""


class ExportError(TenfoldError):
    """The model cannot be exported faithfully (e.g. re-parameterization changed its outputs)."""


def one_line(exc: BaseException) -> str:
    """The message of `exc` as one line.

    Exceptions raised in DataLoader workers come back re-wrapped with the worker's traceback in the
    message; the user only needs its last line.
    """
    text = str(exc).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1]
        # The last line reads "<ExceptionType>: <message>".
        text = text.split(": ", 1)[-1]
    return " ".join(text.split())
