#!/usr/bin/env python
"""Cost of the up-front data check: ``validate_data: headers`` and ``full`` on every split of
leaf_disease (phone JPEGs up to 4160 px) and kvasir_seg (256² JPEGs), in seconds and per pair.

    python benchmarks/bench_validation.py [--data ../shared/data] [--repeats 3]

One warm-up pass first (so both modes read from the page cache), then the best of ``--repeats``.
The check uses a thread pool of min(8, CPU count) threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infosam_hf.data import load_splits  # noqa: E402
from infosam_hf.data.validation import validate_splits  # noqa: E402

DATASETS = ("leaf_disease", "kvasir_seg")


def best_seconds(splits: dict, mode: str, repeats: int) -> float:
    """The fastest of ``repeats`` checks of ``splits`` in ``mode``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        validate_splits(splits, mode, progress=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    print(f"threads: {min(8, os.cpu_count() or 1)}")
    print(f"{'dataset':<14}{'pairs':>7}{'mode':>9}{'seconds':>10}{'ms/pair':>10}")
    for name in DATASETS:
        source = load_splits(str(Path(options.data) / name))
        splits = {split: source[split] for split in source}
        pairs = sum(len(dataset) for dataset in splits.values())
        validate_splits(splits, "full", progress=False)  # warm the page cache
        for mode in ("headers", "full"):
            seconds = best_seconds(splits, mode, options.repeats)
            print(f"{name:<14}{pairs:>7}{mode:>9}{seconds:>10.3f}{1000 * seconds / pairs:>10.2f}")


if __name__ == "__main__":
    main()
