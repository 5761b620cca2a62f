"""Rewrite this folder's preference pairs (train.jsonl, heldout.jsonl) with the packaged generator.

    python examples/dpo/make_data.py [--out DIR] [--train N] [--heldout N] [--seed S]

The generator lives in `tunesmith.demo_data` (`generate_pairs`): the demo's support-triage task,
with the right JSON as the chosen answer and a near miss as the rejected one. With the defaults
it writes these two files byte for byte.
"""

from pathlib import Path

from tunesmith.demo_data import pairs_main

if __name__ == "__main__":
    pairs_main(default_out=Path(__file__).resolve().parent)
