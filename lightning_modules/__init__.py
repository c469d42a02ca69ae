"""One folder per method. `lightning_modules.methods` imports (and so registers) every one of them."""
