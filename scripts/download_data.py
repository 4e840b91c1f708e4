#!/usr/bin/env python
"""Download the public Conv-LoRA / InfoSAM segmentation benchmarks into ``data/``.

    python scripts/download_data.py polyp isic2017        # or aliases: kvasir leaf camo isic road sbu
    python scripts/download_data.py all --root data
    python scripts/download_data.py --list

Each set lands in ``<root>/<name>/`` as a Conv-LoRA CSV folder; recipes point at it with
``dataset_name_or_path: data/<name>``. Sets already present are skipped (``--force`` replaces them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infosam_hf.data.decoding import DataError  # noqa: E402
from infosam_hf.data.download import ALIASES, BENCHMARKS, download_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmark names or aliases, or 'all'")
    parser.add_argument("--root", default="data", help="folder to unpack into (default: data)")
    parser.add_argument("--force", action="store_true", help="re-download and replace sets already present")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip files")
    parser.add_argument("--list", action="store_true", help="list the available sets and exit")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, url in BENCHMARKS.items():
            aliases = ", ".join(a for a, target in ALIASES.items() if target == name)
            print(f"{name:<28} {url}" + (f"  (alias: {aliases})" if aliases else ""))
        return 0 if args.list else 2
    names = list(BENCHMARKS) if "all" in args.names else args.names
    try:
        for name in names:
            folder = download_dataset(name, args.root, force=args.force, keep_archive=args.keep_archive)
            print(f"{name}: ready in {folder}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
