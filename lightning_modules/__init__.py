"""One folder per method; importing this package registers every method (explicitly, no scanning)."""

from lightning_modules.rdnet import module as _rdnet  # noqa: F401
