"""One folder per method; importing this package registers every method (explicitly, no scanning)."""

from lightning_modules.asr import module as _asr  # noqa: F401
from lightning_modules.rdnet import module as _rdnet  # noqa: F401
