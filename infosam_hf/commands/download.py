"""``infosam download NAME [NAME ...] [--root data]``: fetch the public Conv-LoRA / InfoSAM benchmarks.

Each set lands in ``<root>/<name>/`` as a Conv-LoRA CSV folder; recipes point at it with
``dataset_name_or_path: data/<name>``. Sets already present are skipped (``--force`` replaces them).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..data.download import ALIASES, BENCHMARKS, download_dataset
from .common import run_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infosam download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmark names or aliases, or 'all'")
    parser.add_argument("--root", default="data", help="folder to unpack into (default: data)")
    parser.add_argument("--force", action="store_true", help="re-download and replace sets already present")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip files")
    parser.add_argument("--list", action="store_true", help="list the available sets and exit")
    return parser


def _download(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.list or not args.names:
        for name, url in BENCHMARKS.items():
            aliases = ", ".join(a for a, target in ALIASES.items() if target == name)
            print(f"{name:<28} {url}" + (f"  (alias: {aliases})" if aliases else ""))
        return 0 if args.list else 2
    names = list(BENCHMARKS) if "all" in args.names else args.names
    for name in names:
        folder = download_dataset(name, args.root, force=args.force, keep_archive=args.keep_archive)
        print(f"{name}: ready in {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on failure."""
    return run_main(_download, argv)
