"""tenfold entry point: `python train.py --config configs/<method>.yaml [key=value ...]`."""

import sys

from tenfold.cli import main

if __name__ == "__main__":
    sys.exit(main())
