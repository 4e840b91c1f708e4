#!/usr/bin/env python
"""Benchmark: a training step with K objects per image (image encoder once per image, prompt encoder + mask
decoder once per object) against the same K objects as K separate examples (encoder once per object).

The step is the trainer's own: ``InfoSAMTrainer.compute_loss`` (structure loss + InfoSAM's loss_r and loss_d: the
teacher pass with the adapters off, the relation module over every object) and its backward, for a LoRA student
of a narrow 12-block SAM on CPU, the shared layout as ``objects_per_image`` collates it (``(B, K)`` prompts and
labels, ``objects_valid``), the separate one as today's one-object batches. FLOPs (``torch.utils.flop_counter``):
that step, and the plain model step of ViT-B SAM at 1024² counted on the ``meta`` device (no memory, no time).

Usage: ``python benchmarks/bench_objects.py [--image_size 256] [--images 2] [--steps 5] [--objects 1 4 8 16]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import SamConfig, SamModel  # noqa: E402

from bench_step import sam_fields  # noqa: E402
from infosam_hf import InfoSAMConfig, InfoSAMTrainer  # noqa: E402
from infosam_hf.data.collator import OBJECTS_VALID_KEY  # noqa: E402
from infosam_hf.models.sam import load_sam  # noqa: E402
from infosam_hf.relation import attach_relation_module  # noqa: E402
from infosam_hf.tuners.registry import build_student  # noqa: E402


def batch(images: int, objects: int, image_size: int, shared: bool, device: str = "cpu") -> dict:
    """``images`` images with ``objects`` box prompts each: (B, K) prompts, or B·K single-prompt examples."""
    generator = torch.Generator().manual_seed(0)
    rows, per_row = (images, objects) if shared else (images * objects, 1)
    corners = torch.rand(rows, per_row, 2, generator=generator) * image_size * 0.5
    boxes = torch.cat([corners, corners + image_size * 0.4], dim=-1)
    return {"pixel_values": torch.randn(rows, 3, image_size, image_size, device=device),
            "input_boxes": boxes.to(device), "labels": (torch.rand(rows, per_row, image_size // 4, image_size // 4) > 0.5).float().to(device)}


def trainer_batch(images: int, objects: int, image_size: int, shared: bool) -> dict:
    """The collated training batch of either layout: labels at the input size, ``objects_valid`` when shared."""
    inputs = batch(images, objects, image_size, shared)
    labels = F.interpolate(inputs["labels"], size=(image_size, image_size))
    if shared:
        inputs["labels"] = labels
        inputs[OBJECTS_VALID_KEY] = torch.ones(images, objects, dtype=torch.bool)
    else:
        inputs["labels"] = labels[:, 0]
    return inputs


def step(model, inputs: dict) -> None:
    out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False)
    logits = out.pred_masks[:, :, 0]  # (rows, prompts per row, S/4, S/4)
    F.binary_cross_entropy_with_logits(logits, inputs["labels"]).backward()


def train_step(trainer, inputs: dict) -> None:
    """The trainer's loss (segmentation + InfoSAM) and its backward."""
    trainer.compute_loss(trainer.model, inputs).backward()
    trainer.model.zero_grad(set_to_none=True)


def flops(run, *args) -> float:
    with FlopCounterMode(display=False) as counter:
        run(*args)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()
    torch.manual_seed(0)
    sam = load_sam(sam_config=sam_fields(args.image_size), seed=0)
    attach_relation_module(sam)
    student = build_student(sam, "lora", {"r": 4, "lora_alpha": 4, "target_modules": ["qkv"],
                                          "modules_to_save": ["mask_decoder"]}).train()
    config = InfoSAMConfig(output_dir=tempfile.mkdtemp(prefix="bench_objects_"), use_cpu=True, report_to="none",
                           lambda_r=1.0, lambda_d=0.5, teacher_cache="off", disable_tqdm=True)
    trainer = InfoSAMTrainer(model=student, args=config)
    trainer.model.train()
    with torch.device("meta"):
        vit_b = SamModel(SamConfig())
        attach_relation_module(vit_b)
    vit_b_student = build_student(vit_b, "lora", {"r": 4, "lora_alpha": 4, "target_modules": ["qkv"],
                                                  "modules_to_save": ["mask_decoder"]}).train()
    print(f"{args.images} image(s) per step; InfoSAMTrainer.compute_loss + backward (structure loss, loss_r, "
          f"loss_d; LoRA) of a narrow 12-block SAM at {args.image_size}² on CPU (median of "
          f"{args.steps} round-robin steps); ViT-B model step at 1024² counted on meta")
    print(f"{'K':>3} {'shared s':>9} {'separate s':>11} {'shared/K=1':>11} {'separate/K=1':>13} "
          f"{'GFLOP shared':>13} {'GFLOP sep.':>11} {'ViT-B TFLOP shared':>19} {'ViT-B TFLOP sep.':>17}")
    # round-robin: every layout and K timed once per round, so load from other jobs on the machine spreads evenly
    layouts = {(k, shared): trainer_batch(args.images, k, args.image_size, shared)
               for k in args.objects for shared in (True, False)}
    samples = {key: [] for key in layouts}
    for inputs in layouts.values():
        train_step(trainer, inputs)  # warm-up
    for _ in range(args.steps):
        for key, inputs in layouts.items():
            start = time.perf_counter()
            train_step(trainer, inputs)
            samples[key].append(time.perf_counter() - start)
    base = None
    for k in args.objects:
        times = {shared: sorted(samples[k, shared])[len(samples[k, shared]) // 2] for shared in (True, False)}
        base = base or times[True]
        counted = [flops(train_step, trainer, trainer_batch(args.images, k, args.image_size, s)) / 1e9
                   for s in (True, False)]
        meta = [flops(step, vit_b_student, batch(args.images, k, 1024, s, device="meta")) / 1e12 for s in (True, False)]
        print(f"{k:>3} {times[True]:>9.2f} {times[False]:>11.2f} {times[True] / base:>10.2f}x "
              f"{times[False] / base:>12.2f}x {counted[0]:>13.1f} {counted[1]:>11.1f} {meta[0]:>19.2f} "
              f"{meta[1]:>17.2f}")


if __name__ == "__main__":
    main()
