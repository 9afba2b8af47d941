#!/usr/bin/env python
"""Make the demo dataset for the quickstart: python datasets/make_demo.py [--out datasets/demo] [--count 16]

Small paintings in one warm colour style with .txt captions (see toolkit/testing/demo.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.testing.demo import make  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "datasets" / "demo")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args()
    make(args.out, args.count)
    print(f"wrote {args.count} images with captions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
