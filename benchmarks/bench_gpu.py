#!/usr/bin/env python
"""GPU benchmark: images/s and peak memory of SAM ViT-B training steps at 1024², batch 4, random weights.

Variants, each in a fresh model on the first CUDA device (one at a time, so every peak is its own):

- plain PEFT: segmentation loss only;
- InfoSAM, official design: a separate frozen teacher copy and a full teacher forward every step;
- InfoSAM, this project: the teacher is the student with adapters disabled (shared weights), with
  frozen-prefix sharing, without and with the teacher-embedding cache;
- bf16 autocast: plain PEFT and InfoSAM with the cache.

Prints one table and every variant's ratios to the official design. ``--tiny`` runs the same code end to
end on the CPU at a tiny size (a smoke test, not a measurement).

Usage: ``python benchmarks/bench_gpu.py [--method sam_adapter] [--steps 20] [--batch_size 4] [--tiny]``.
"""

import argparse
import contextlib
import gc
import sys
import tempfile
import time

import torch

from bench_step import build_peft_sam, make_trainer, sam_fields, synthetic_batch, train_step

from infosam_hf.models.sam import load_sam


VARIANTS = {  # name -> (InfoSAM, separate teacher, cache, bf16)
    "plain PEFT": (False, False, False, False),
    "InfoSAM, official (teacher copy)": (True, True, False, False),
    "InfoSAM, shared weights": (True, False, False, False),
    "InfoSAM, shared + cache": (True, False, True, False),
    "plain PEFT, bf16": (False, False, False, True),
    "InfoSAM, shared + cache, bf16": (True, False, True, True),
}
OFFICIAL = "InfoSAM, official (teacher copy)"


def build_sam(fields):
    """A random SAM: from ``fields``, or ViT-B (``SamConfig()``) when None."""
    from transformers import SamConfig, SamModel

    return load_sam(sam_config=fields, seed=1) if fields else SamModel(SamConfig())


def run_variant(name: str, opts, device: torch.device, fields, data, batch) -> dict[str, float]:
    """Build a fresh model for ``name``, train ``opts.steps`` timed steps, return images/s and peak GiB."""
    info, separate, cache, bf16 = VARIANTS[name]
    student = build_peft_sam(fields, opts.method)
    teacher = build_sam(fields) if separate else None  # the official design's second, frozen SAM
    trainer = make_trainer(student, info, cache_dir=tempfile.mkdtemp(prefix="bench_gpu_") if cache else None,
                           teacher=teacher, data=data if cache else None)
    trainer.create_optimizer()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    cuda = device.type == "cuda"
    with autocast:
        for _ in range(opts.warmup):  # the first fills the cache
            train_step(trainer, batch)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(opts.steps):
            train_step(trainer, batch)
        if cuda:
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    result = {"images/s": opts.steps * opts.batch_size / seconds, "peak GiB": peak}
    del trainer, student, teacher
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="sam_adapter")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny SAM on the CPU: checks that everything runs")
    opts = parser.parse_args(argv)
    if opts.tiny:
        device, image_size, fields = torch.device("cpu"), 64, sam_fields(64, hidden=32, layers=3)
        opts.steps, opts.warmup = min(opts.steps, 2), 1
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_gpu.py: no CUDA device (use --tiny for a CPU smoke run)")
        device, image_size, fields = torch.device("cuda", 0), 1024, None  # None: ViT-B (SamConfig())
        torch.backends.cuda.matmul.allow_tf32 = False
    data, batch = synthetic_batch(opts.batch_size, image_size, device)
    results = {name: run_variant(name, opts, device, fields, data, batch) for name in VARIANTS}
    what = "tiny SAM (CPU smoke run)" if opts.tiny else f"SAM ViT-B, {torch.cuda.get_device_name(device)}"
    print(f"\n{what}: {image_size}^2, batch {opts.batch_size}, {opts.method}, random weights, {opts.steps} steps "
          f"after {opts.warmup} warm-up")
    print(f"{'variant':<36}{'images/s':>10}{'peak GiB':>10}{'speed ÷ official':>18}{'memory ÷ official':>19}")
    official = results[OFFICIAL]
    for name, row in results.items():
        print(f"{name:<36}{row['images/s']:>10.2f}{row['peak GiB']:>10.2f}"
              f"{row['images/s'] / official['images/s']:>17.2f}x{row['peak GiB'] / official['peak GiB']:>18.2f}x")
    return results


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
