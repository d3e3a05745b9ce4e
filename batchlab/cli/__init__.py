"""The `batchlab` command line: `main(argv)` (commands.py), its options (parser.py)."""

from .commands import main

__all__ = ["main"]
