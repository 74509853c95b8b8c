"""Write the seed corpora of the atheris harnesses from the real pings of tests/data/reference/.

    python fuzz/make_corpus.py [--out fuzz/corpus]

- `<out>/rules/<name>`: each reference ping with a pipeline `meta`, as one line (and each real
  crash ping also as a main-process crash ping);
- `<out>/reader/<name>`: an options byte (see fuzz_reader.py), then a small ping file: that
  ping, a blank line, and the next ping.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_common import reference_lines  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "corpus")
    out = parser.parse_args().out
    lines = reference_lines()
    for harness in ("rules", "reader"):
        (out / harness).mkdir(parents=True, exist_ok=True)
    for number, (name, line) in enumerate(lines):
        (out / "rules" / name).write_bytes(line)
        following = lines[(number + 1) % len(lines)][1]
        options = bytes([number % 256])  # every compression, layout and chunk size
        (out / "reader" / name).write_bytes(options + line + b"\n\n" + following + b"\n")
    print(f"wrote {len(lines)} seeds each to {out / 'rules'} and {out / 'reader'}")


if __name__ == "__main__":
    main()
