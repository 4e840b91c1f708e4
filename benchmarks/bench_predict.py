#!/usr/bin/env python
"""Benchmark: inference throughput on CPU, PyTorch vs ONNX Runtime, and peak memory of tiled vs untiled prediction.

A small SAM (ViT-B's patch 16 and window 14 at a CPU-friendly width, depth and input size) with a perturbed
``sam_adapter`` (not mergeable: its modules are ops in the ONNX graph) is exported with ``export_onnx``. Printed:

- images/s for single-prompt predict (one box, a 600×400 image), tiled predict (a 1200×900 image, tiles at the
  input size, 32 px overlap) and everything mode (``points_per_side`` 8), PyTorch and ONNX Runtime side by side
  (tiled and everything mode run the same algorithms on either backend, see ``evaluation/backends.py``);
- peak RSS of predicting one box on a 2000×1500 and an 8000×6000 image, tiled and untiled, each in a fresh
  process, above the process's peak after loading the model and decoding the image (the image itself is
  excluded: it is the same in both modes).

Usage: ``python benchmarks/bench_predict.py [--size 256] [--repeats 3]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from infosam_hf.data import preprocess_image
from infosam_hf.evaluation.everything import MaskGeneratorSettings, generate_masks
from infosam_hf.evaluation.loop import sam_logits
from infosam_hf.evaluation.metrics import logits_to_original
from infosam_hf.evaluation.predict import Prompt, _prompt_tensors
from infosam_hf.evaluation.tiling import predict_tiled
from infosam_hf.models.sam import load_sam
from infosam_hf.relation import attach_relation_module
from infosam_hf.tuners.registry import build_student


def small_model(size: int):
    fields = {
        "vision_config": {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "window_size": 14,
                          "global_attn_indexes": [1, 3], "image_size": size, "patch_size": 16, "mlp_dim": 384},
        "mask_decoder_config": {"hidden_size": 64, "num_attention_heads": 4, "mlp_dim": 256},
        "initializer_range": 0.02,
    }
    sam = load_sam(sam_config=fields, seed=0)
    attach_relation_module(sam)
    model = build_student(sam, "sam_adapter", {})
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def untiled(model, image: np.ndarray, prompt: Prompt, size: int) -> np.ndarray:
    pixels, reshaped = preprocess_image(Image.fromarray(image), size)
    batch = {"pixel_values": pixels[None], **_prompt_tensors([prompt], [image.shape[:2]], size)}
    with torch.no_grad():
        logits = sam_logits(model, batch)
    return (logits_to_original(logits[0, 0], logits.shape[-2:], reshaped, image.shape[:2]) > 0).numpy()


def rate(function, repeats: int) -> float:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return repeats / (time.perf_counter() - start)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


def _reset_peak_rss() -> int:
    """Reset the peak RSS (Linux: ``/proc/self/clear_refs``) and return the current RSS in kB."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_kb("VmRSS")


def memory_child(mode: str, height: int, width: int, size: int) -> None:
    model = small_model(size)
    bytes_ = np.random.default_rng(0).bytes(height * width * 3)  # no int64 temporary raising the baseline peak
    image = np.frombuffer(bytes_, dtype=np.uint8).reshape(height, width, 3)
    prompt = Prompt(box=(width * 0.3, height * 0.3, width * 0.45, height * 0.45))
    before = _reset_peak_rss()
    start = time.perf_counter()
    if mode == "tiled":
        predict_tiled(model, image, prompt, tile=size, overlap=32)
    else:
        untiled(model, image, prompt, size)
    peak = _status_kb("VmHWM")
    print(json.dumps({"delta_mb": (peak - before) / 1024, "seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory_child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        mode, height, width = args.memory_child
        memory_child(mode, int(height), int(width), args.size)
        return
    torch.set_num_threads(1)
    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor
    from infosam_hf.convert.onnx import export_onnx

    size = args.size
    model = small_model(size)
    with tempfile.TemporaryDirectory() as folder:
        diffs = export_onnx(model, folder)
        predictor = OnnxSamPredictor(folder, threads=torch.get_num_threads())  # same threads as PyTorch
        small = np.random.default_rng(0).integers(0, 255, (400, 600, 3), dtype=np.uint8)
        large = np.random.default_rng(1).integers(0, 255, (900, 1200, 3), dtype=np.uint8)
        box = Prompt(box=(100, 80, 400, 300))
        rows = [
            ("single-prompt predict 600x400", rate(lambda: untiled(model, small, box, size), args.repeats),
             rate(lambda: predictor.predict_logits(Image.fromarray(small), box=box.box) > 0, args.repeats)),
            (f"tiled predict 1200x900 (tile {size})",
             rate(lambda: predict_tiled(model, large, Prompt(box=(50, 50, 1150, 850)), tile=size, overlap=32), 1),
             rate(lambda: predict_tiled(predictor, large, Prompt(box=(50, 50, 1150, 850)), tile=size, overlap=32),
                  1)),
            ("everything 600x400 (8x8 points)",
             rate(lambda: generate_masks(model, small, MaskGeneratorSettings(points_per_side=8)), 1),
             rate(lambda: generate_masks(predictor, small, MaskGeneratorSettings(points_per_side=8)), 1)),
        ]
    print(f"small SAM, {size}x{size} input, sam_adapter; onnxruntime vs PyTorch max abs diff: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    print(f"{'images/s':40s} {'PyTorch':>9s} {'ONNX RT':>9s} {'ratio':>7s}")
    for name, torch_rate, ort_rate in rows:
        ort_text = f"{ort_rate:9.2f} {ort_rate / torch_rate:7.2f}" if ort_rate else f"{'n/a':>9s} {'':>7s}"
        print(f"{name:40s} {torch_rate:9.2f} {ort_text}")
    print(f"\npeak RSS above baseline (MB), box prompt, tile {size}, overlap 32, fresh process each")
    print(f"{'image':12s} {'untiled':>9s} {'tiled':>9s} {'tiled s':>8s}")
    for height, width in ((1500, 2000), (6000, 8000)):
        measured = {}
        for mode in ("untiled", "tiled"):
            proc = subprocess.run([sys.executable, __file__, "--size", str(size), "--memory_child", mode, str(height),
                                   str(width)], capture_output=True, text=True, check=True)
            measured[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{width}x{height:<7d} {measured['untiled']['delta_mb']:9.0f} {measured['tiled']['delta_mb']:9.0f} "
              f"{measured['tiled']['seconds']:8.1f}")


if __name__ == "__main__":
    main()
