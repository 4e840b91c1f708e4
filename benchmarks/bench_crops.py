#!/usr/bin/env python
"""Benchmark: G-SAM-style crops (128/256/512) against SAM's 1024² input on one dynamic-size model.

Prints, as ratios to 1024:
- FLOPs of SAM ViT-B's image encoder forward, counted with ``torch.utils.flop_counter.FlopCounterMode``
  on the ``meta`` device (no weights, no compute). ``linear+conv`` counts the projections, MLPs,
  patch embedding and neck (comparable with G-SAM's reference 8.05 / 32.2 / 102.9 / 371.2 GMACs);
  ``all`` adds the attention matmuls (q·k, attn·v, relative positions).
- the same counts for the GSAM variant's image encoder (``model_variant: gsam``: stride-8 tokens, ResNet-101
  branch, pooled-key attention, multi-scale AdaptFormer) at each crop size, as ratios to SAM at the largest size
  (G-SAM reports 74 GMACs at 128 against 372 for SAM at 1024, a ratio of 0.199; MAC counters differ, so
  compare ratios). ``--no_gsam`` skips it.
- step time and peak memory of one training step (LoRA, BCE and InfoSAM's losses as in the G-SAM
  recipes; ``--no_info``: BCE only) of a small
  SAM with ViT-B's patch size, window size and global/windowed pattern, on the available device
  (CUDA: ``max_memory_allocated``; CPU: each size in a fresh process, peak RSS above the
  post-setup baseline). ``--vit_b`` times the real ViT-B size instead (use a GPU).

Usage: ``python benchmarks/bench_crops.py [--steps 3] [--batch_size 2] [--sizes 128 256 512 1024]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from peft import get_peft_model  # noqa: E402
from transformers import SamConfig, SamModel  # noqa: E402

from infosam_hf import InfoSAMConfig, InfoSAMTrainer  # noqa: E402
from infosam_hf.models.dynamic import enable_dynamic_input_size  # noqa: E402
from infosam_hf.models.sam import load_sam  # noqa: E402
from infosam_hf.relation import attach_relation_module  # noqa: E402
from infosam_hf.tuners.registry import build_student  # noqa: E402
from infosam_hf.tuners.variants import GsamConfig  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import train_step  # noqa: E402  (one optimiser step, shared with bench_step)

REFERENCE_GMACS = {128: 8.05, 256: 32.2, 512: 102.9, 1024: 371.2}
GSAM_REFERENCE = (128, 74.0, 372.0)  # G-SAM's paper: GSAM at a 128 crop, SAM at 1024 (GMACs)
LINEAR_OPS = ("aten.addmm", "aten.mm", "aten.convolution")


def small_fields() -> dict:
    """ViT-B's patch 16, window 14 and one global layer in two, at a CPU-friendly width and depth."""
    return {
        "vision_config": {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "window_size": 14,
                          "global_attn_indexes": [1, 3], "image_size": 1024, "patch_size": 16, "mlp_dim": 384},
        "mask_decoder_config": {"hidden_size": 64, "num_attention_heads": 4, "mlp_dim": 256},
        "initializer_range": 0.02,
    }


def _encoder_gmacs(encoder, size: int) -> dict[str, float]:
    with FlopCounterMode(display=False) as counter:
        encoder(torch.empty(1, 3, size, size, device="meta"))
    ops = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    return {"linear+conv": sum(ops.get(op, 0) for op in LINEAR_OPS) / 2e9, "all": counter.get_total_flops() / 2e9}


def vit_b_encoder_flops(sizes) -> dict[int, dict[str, float]]:
    """GMACs (FLOPs / 2) of ViT-B's image encoder forward at each square size, counted on ``meta``."""
    config = SamConfig()
    config.vision_config._attn_implementation = "eager"  # attention as plain matmuls the counter knows
    with torch.device("meta"):
        model = enable_dynamic_input_size(SamModel(config))
    return {size: _encoder_gmacs(model.vision_encoder, size) for size in sizes}


def gsam_encoder_flops(sizes) -> dict[int, dict[str, float]]:
    """GMACs of the GSAM variant's ViT-B image encoder (with its ResNet-101 branch) at each size, on ``meta``."""
    config = SamConfig()
    config.vision_config._attn_implementation = "eager"
    with torch.device("meta"):
        model = get_peft_model(SamModel(config), GsamConfig(resnet_weights=None)).eval()
    return {size: _encoder_gmacs(model.base_model.model.vision_encoder, size) for size in sizes}


def make_trainer(vit_b: bool, device: str, info: bool = True) -> InfoSAMTrainer:
    sam = (enable_dynamic_input_size(SamModel(SamConfig())) if vit_b
           else load_sam(sam_config=small_fields(), seed=0, dynamic_input_size=True))
    attach_relation_module(sam)
    student = build_student(sam, "lora", {"r": 4, "lora_alpha": 4, "target_modules": ["qkv"]})
    args = InfoSAMConfig(output_dir="/tmp/bench_crops", report_to="none", use_cpu=device == "cpu",
                         learning_rate=1e-4, weight_decay=0.0, seg_loss="bce", lambda_r=1.0 if info else 0.0,
                         lambda_d=0.5 if info else 0.0)
    trainer = InfoSAMTrainer(model=student, args=args)
    trainer.create_optimizer()
    return trainer


def make_batch(size: int, batch_size: int, device) -> dict:
    generator = torch.Generator().manual_seed(size)
    labels = torch.zeros(batch_size, size, size)
    labels[:, size // 4: size // 2, size // 3: 2 * size // 3] = 1
    return {"pixel_values": torch.randn(batch_size, 3, size, size, generator=generator).to(device),
            "labels": labels.to(device)}


def time_size(size: int, steps: int, batch_size: int, vit_b: bool, device: str, info: bool = True) -> dict[str, float]:
    """Mean step time (s) and peak memory (MiB) of training steps at ``size``² in this process."""
    torch.manual_seed(0)
    trainer = make_trainer(vit_b, device, info)
    batch = make_batch(size, batch_size, trainer.args.device)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train_step(trainer, batch)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(trainer, batch)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    return {"time": (time.perf_counter() - start) / steps, "memory": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--vit_b", action="store_true", help="Time the real ViT-B (needs a GPU for 1024).")
    parser.add_argument("--no_info", action="store_true", help="Plain LoRA + BCE (G-SAM), without InfoSAM's losses.")
    parser.add_argument("--no_gsam", action="store_true", help="Skip the GSAM variant's FLOP counts.")
    parser.add_argument("--no_timing", action="store_true", help="FLOP counts only.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--_worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        print(json.dumps(time_size(args._worker, args.steps, args.batch_size, args.vit_b, args.device,
                                   not args.no_info)))
        return
    sizes = sorted(args.sizes)
    base = max(sizes)
    flops = vit_b_encoder_flops(sizes)
    timings = {}
    for size in sizes if not args.no_timing else []:
        if args.device == "cuda":
            timings[size] = time_size(size, args.steps, args.batch_size, args.vit_b, args.device, not args.no_info)
        else:  # a fresh process per size so that its peak RSS is its own
            command = [sys.executable, __file__, "--_worker", str(size), "--steps", str(args.steps),
                       "--batch_size", str(args.batch_size), "--device", args.device]
            command += (["--vit_b"] if args.vit_b else []) + (["--no_info"] if args.no_info else [])
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            timings[size] = json.loads(output.strip().splitlines()[-1])
    model = "ViT-B" if args.vit_b else "small SAM (width 96, depth 4, patch 16, window 14)"
    print(f"ViT-B image encoder forward, GMACs (FlopCounterMode on meta) and ratio to {base}:")
    print(f"{'size':>6}{'linear+conv':>14}{'reference':>11}{'ratio':>8}{'all':>10}{'ratio':>8}")
    for size in sizes:
        row = flops[size]
        reference = REFERENCE_GMACS.get(size, float("nan"))
        print(f"{size:>6}{row['linear+conv']:>14.2f}{reference:>11.2f}"
              f"{row['linear+conv'] / flops[base]['linear+conv']:>8.3f}{row['all']:>10.2f}"
              f"{row['all'] / flops[base]['all']:>8.3f}")
    if not args.no_gsam:
        gsam = gsam_encoder_flops(sizes)
        print(f"\nGSAM (model_variant: gsam) ViT-B image encoder forward, GMACs and ratio to SAM's at {base}:")
        print(f"{'size':>6}{'linear+conv':>14}{'ratio':>8}{'all':>10}{'ratio':>8}{'vs SAM same size':>18}")
        for size in sizes:
            row = gsam[size]
            print(f"{size:>6}{row['linear+conv']:>14.2f}{row['linear+conv'] / flops[base]['linear+conv']:>8.3f}"
                  f"{row['all']:>10.2f}{row['all'] / flops[base]['all']:>8.3f}"
                  f"{row['all'] / flops[size]['all']:>18.2f}")
        crop, reported, sam_reported = GSAM_REFERENCE
        print(f"G-SAM's paper: GSAM {reported} GMACs at {crop} vs SAM {sam_reported} at 1024, ratio "
              f"{reported / sam_reported:.3f}")
    if args.no_timing:
        return
    losses = "BCE" if args.no_info else "BCE + InfoSAM losses"
    print(f"\nTraining step (LoRA r=4, {losses}, batch {args.batch_size}) of a {model} on {args.device}, "
          f"mean of {args.steps} steps:")
    print(f"{'size':>6}{'step s':>10}{'ratio':>8}{'peak MiB':>11}{'ratio':>8}")
    for size in sizes:
        row = timings[size]
        print(f"{size:>6}{row['time']:>10.3f}{row['time'] / timings[base]['time']:>8.3f}"
              f"{row['memory']:>11.1f}{row['memory'] / max(timings[base]['memory'], 1e-9):>8.3f}")


if __name__ == "__main__":
    main()
