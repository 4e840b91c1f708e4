#!/usr/bin/env python
"""Data-path throughput: images/second through the full SAM transform (decode, resize to 1024²,
normalise, pad, label, prompts) for leaf_disease (phone JPEGs up to 4160 px) and kvasir_seg
(256² JPEGs), with and without ``PIL.Image.draft``, measured side by side in one run.

    python benchmarks/bench_data.py [--data ../shared/data] [--images 40] [--repeats 2] [--workers 0]

Single-threaded (OMP_NUM_THREADS=1), one process unless ``--workers`` is given. Draft and no-draft
passes alternate over the same images after one warm-up pass, so the page cache treats them alike.
Draft only changes JPEGs at least twice the target size, so such images also get their own row.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from datasets import concatenate_datasets  # noqa: E402

torch.set_num_threads(1)

from infosam_hf.data import SamSegmentationTransform, load_splits  # noqa: E402
from infosam_hf.data.decoding import open_image  # noqa: E402

DATASETS = ("leaf_disease", "kvasir_seg")


def _run(dataset, workers: int) -> float:
    """Seconds to pull every row of ``dataset`` through its transform."""
    start = time.perf_counter()
    if workers:
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
        for _ in loader:
            pass
    else:
        for index in range(len(dataset)):
            dataset[index]
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding the sets")
    parser.add_argument("--images", type=int, default=100, help="images per set, all splits (default 100)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per setting (best is kept)")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: in-process)")
    args = parser.parse_args(argv)

    print(f"full SAM transform at {args.image_size}x{args.image_size}, box prompts, 1 thread, "
          f"{'in-process' if not args.workers else f'{args.workers} DataLoader workers'}; best of {args.repeats}")
    print(f"{'dataset':<22}{'images':>7}{'mean source size':>18}{'draft img/s':>13}{'no-draft img/s':>16}"
          f"{'speed-up':>10}")
    rows = []
    for name in DATASETS:
        folder = Path(args.data) / name
        if not folder.is_dir():
            print(f"{name:<22} skipped: {folder} not found")
            continue
        splits = load_splits(str(folder))
        rows_all = concatenate_datasets([splits[split] for split in splits])
        rows_all = rows_all.select(range(min(args.images, len(rows_all))))
        sizes = [open_image(value).size for value in rows_all["image"]]
        rows.append((name, rows_all, sizes))
        large = [i for i, (w, h) in enumerate(sizes) if max(w, h) >= 2 * args.image_size]
        if large:  # PIL draft only reduces JPEGs at least twice the target size
            rows.append((f"{name} >={2 * args.image_size}px", rows_all.select(large), [sizes[i] for i in large]))
    for label, split, sizes in rows:
        mean_w = sum(w for w, _ in sizes) / len(sizes)
        mean_h = sum(h for _, h in sizes) / len(sizes)
        variants = {}
        for draft in (True, False):
            transform = SamSegmentationTransform(args.image_size, prompt_mode="box", train=False, seed=0,
                                                 jpeg_draft=draft)
            variants[draft] = split.with_transform(transform)
        _run(variants[True], args.workers)  # warm-up: file cache, lazy imports
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.repeats):
            for draft in (True, False):
                best[draft] = min(best[draft], _run(variants[draft], args.workers))
        rate = {draft: len(split) / seconds for draft, seconds in best.items()}
        print(f"{label:<22}{len(split):>7}{f'{mean_w:.0f}x{mean_h:.0f}':>18}{rate[True]:>13.1f}{rate[False]:>16.1f}"
              f"{rate[True] / rate[False]:>9.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
