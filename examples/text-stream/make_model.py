"""Write bigram.json: next-character counts from a built-in text (a tiny language model).

Usage: ``python make_model.py [OUT_DIR]`` (default: this directory).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEXT = """\
the model reads a request, thinks for a moment and answers one token at a time.
a server that streams its answer lets the reader see the first words at once,
long before the last ones are written. the tokens here are single characters,
drawn from a table of which letter tends to follow which, so the text looks
almost like english and means nothing at all. it is small, it is quick, and it
always says the same thing for the same seed, which is what a test wants.
"""


def bigram_counts(text: str) -> dict[str, dict[str, int]]:
    """Count, for every character, how often each character follows it."""
    table: dict[str, dict[str, int]] = {}
    for current, following in zip(text, text[1:]):
        row = table.setdefault(current, {})
        row[following] = row.get(following, 0) + 1
    return table


def main() -> None:
    """Write bigram.json into the directory given on the command line."""
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bigram.json"
    path.write_text(json.dumps(bigram_counts(TEXT), indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
