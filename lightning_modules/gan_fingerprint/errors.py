"""The one error type of verification (a suspect or a registration that cannot be checked).

[platform gap] tenfold.errors has no verification error; this subclass of TenfoldError makes train.py
print it as one `error:` line with exit code 2, like the platform's own errors.
"""

from tenfold.errors import TenfoldError


class VerificationError(TenfoldError):
    """A suspect model, its outputs or a registration cannot be verified as given."""
