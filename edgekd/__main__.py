"""``python -m edgekd`` (and ``torchrun ... -m edgekd``): the same command line as ``edgekd``."""
from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
