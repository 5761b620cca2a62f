"""Rewrite this folder's demo data (train.jsonl, heldout.jsonl) with the packaged generator.

    python examples/demo/make_data.py [--out DIR] [--train N] [--heldout N] [--seed S]

The generator and its rules live in `tunesmith.demo_data` (so `tunesmith demo` also works
from a pip install); with the defaults it writes these two files byte for byte.
"""

from pathlib import Path

from tunesmith.demo_data import main

if __name__ == "__main__":
    main(default_out=Path(__file__).resolve().parent)
