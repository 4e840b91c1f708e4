#!/usr/bin/env python
"""Benchmark: training-step time of InfoSAM ÷ plain PEFT (without and with the speed features), resident
weights, and the peak memory of a ViT-B step at 1024², batch 4 counted on the ``meta`` device.

Timing: a small 12-block SAM (ViT-B's depth and global-attention layout, narrow), interleaved steps in one
process so every variant sees the same machine state. Variants: plain PEFT (segmentation loss only);
InfoSAM with a full teacher encoder each step; with frozen-prefix sharing; with the teacher-embedding
cache (filled in the warm-up step, read afterwards). Memory: see ``meta_memory.py`` for the method.

Usage: ``python benchmarks/bench_step.py [--method sam_adapter] [--image_size 256] [--steps 10]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from infosam_hf import InfoSAMConfig, InfoSAMTrainer  # noqa: E402
from infosam_hf.data import DataArguments, SamPromptCollator, make_synthetic_dataset, with_sam_transform  # noqa: E402
from infosam_hf.models.capture import SamFeatureCapture  # noqa: E402
from infosam_hf.models.sam import load_sam  # noqa: E402
from infosam_hf.relation import attach_relation_module  # noqa: E402
from infosam_hf.tuners.registry import build_student  # noqa: E402

from meta_memory import LiveTensorBytes, unique_bytes  # noqa: E402


def sam_fields(image_size: int, hidden: int = 96, layers: int = 12) -> dict:
    """A narrow SAM with ViT-B's depth and global-attention layout (blocks 2, 5, 8, 11)."""
    return {
        "vision_config": {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
                          "window_size": 8, "global_attn_indexes": [i for i in (2, 5, 8, 11) if i < layers],
                          "image_size": image_size, "patch_size": 16, "mlp_dim": 4 * hidden},
        "mask_decoder_config": {"hidden_size": 64, "num_attention_heads": 4, "mlp_dim": 256},
        "initializer_range": 0.02,
    }


class _MetaConfig(InfoSAMConfig):
    """Leaves a ``meta`` model where it is (Trainer would move it to the CPU)."""

    @property
    def place_model_on_device(self):
        return False


class _MetaCache:
    """Stands in for the teacher-embedding cache on ``meta``: every lookup hits."""

    def __init__(self, channels: int, grid: int):
        self.shape = (channels, grid, grid)

    def get(self, indices, device=None, dtype=torch.float32):
        return torch.empty(len(indices), *self.shape, device="meta", dtype=dtype)

    def put(self, indices, embeddings):
        pass


def build_peft_sam(fields=None, method="sam_adapter", seed=0, device=None):
    """A PEFT student with a relation module: from ``fields`` (random weights), or ViT-B on ``device``."""
    from transformers import SamConfig, SamModel

    with torch.device(device) if device else contextlib.nullcontext():
        sam = load_sam(sam_config=fields, seed=seed) if fields else SamModel(SamConfig())
        attach_relation_module(sam)
        return build_student(sam, method)


def make_trainer(student, info: bool, cache_dir=None, share_prefix=True, checkpointing=False, teacher=None,
                 meta=False, data=None, **extra):
    """A trainer for ``student``: plain PEFT (``info=False``) or InfoSAM with the chosen speed features."""
    config_cls = _MetaConfig if meta else InfoSAMConfig
    args = config_cls(output_dir=tempfile.mkdtemp(prefix="bench_"), lambda_r=1.0 if info else 0.0,
                      lambda_d=0.5 if info else 0.0, report_to="none", use_cpu=not torch.cuda.is_available(),
                      learning_rate=1e-4, share_frozen_prefix=share_prefix, info_diagnostics=False,
                      teacher_cache="on" if cache_dir and not meta else "off", teacher_cache_dir=cache_dir,
                      gradient_checkpointing=checkpointing, **extra)
    trainer = InfoSAMTrainer(model=student, args=args, teacher_model=teacher, train_dataset=data)
    if checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
    return trainer


def train_step(trainer, batch, optimizer=True):
    """compute_loss + backward (+ the optimiser step)."""
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    if optimizer:
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return loss


def synthetic_batch(batch_size: int, image_size: int, device="cpu"):
    """A collated training batch of synthetic images with box prompts and example indices."""
    data = make_synthetic_dataset(batch_size, 0, 0, image_size=image_size, seed=0)["train"]
    data = with_sam_transform(data, DataArguments(train_prompt="box"), image_size, train=True)
    batch = SamPromptCollator()([data[i] for i in range(batch_size)])
    return data, {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def meta_peak_memory(method: str, batch_size: int = 4, image_size: int = 1024) -> dict[str, dict[str, float]]:
    """GiB per ViT-B training step (``meta`` device): weights, optimiser state, inputs, and the counted
    activation + gradient peak, for plain PEFT and the InfoSAM variants; and the step's forward + backward
    FLOPs (``torch.utils.flop_counter``: matmuls, convolutions and attention)."""
    from transformers import SamConfig, SamModel

    batch = {"pixel_values": torch.empty(batch_size, 3, image_size, image_size, device="meta"),
             "labels": torch.zeros(batch_size, image_size, image_size, device="meta"),
             "input_boxes": torch.zeros(batch_size, 1, 4, device="meta"),
             "example_index": list(range(batch_size))}
    variants = {
        "plain PEFT": dict(info=False),
        "InfoSAM, separate teacher copy": dict(info=True, separate=True),
        "InfoSAM (shared weights)": dict(info=True, share_prefix=False),
        "InfoSAM + prefix sharing": dict(info=True),
        "InfoSAM + cache": dict(info=True, cache=True),
        "plain PEFT + checkpointing": dict(info=False, checkpointing=True),
        "InfoSAM + checkpointing": dict(info=True, checkpointing=True),
        "InfoSAM + cache + checkpointing": dict(info=True, cache=True, checkpointing=True),
    }
    results = {}
    for name, spec in variants.items():
        student = build_peft_sam(method=method, device="meta")
        teacher = None
        if spec.get("separate"):
            with torch.device("meta"):
                teacher = SamModel(SamConfig())
        trainer = make_trainer(student, spec["info"], share_prefix=spec.get("share_prefix", True) and teacher is None,
                               checkpointing=spec.get("checkpointing", False), meta=True)
        if teacher is not None:  # as InfoSAMTrainer(teacher_model=...) sets it up, minus the move off meta
            teacher.eval().requires_grad_(False)
            trainer.teacher_model, trainer.teacher_capture = teacher, SamFeatureCapture(teacher)
        if spec.get("cache"):
            trainer.teacher_cache = _MetaCache(256, image_size // 16)
        with LiveTensorBytes() as counter:
            train_step(trainer, batch, optimizer=False)
        with FlopCounterMode(display=False) as flops:  # a second pass: its module hooks would keep tensors alive
            train_step(trainer, batch, optimizer=False)
        weights = unique_bytes(student, *([teacher] if teacher is not None else []))
        adam = 2 * unique_bytes(student, trainable_only=True)
        inputs = sum(v.numel() * v.element_size() for v in batch.values() if torch.is_tensor(v))
        total = weights + adam + inputs + counter.peak
        results[name] = {"weights": weights / 2**30, "activations": counter.peak / 2**30, "total": total / 2**30,
                         "tflop": flops.get_total_flops() / 1e12}
    return results


def print_memory(results: dict[str, dict[str, float]], title: str) -> None:
    print(f"\n{title}")
    print(f"{'variant':<34}{'weights':>10}{'act+grad':>10}{'total':>10}{'÷ plain':>9}{'TFLOP':>9}{'÷ plain':>9}")
    plain = results["plain PEFT"]
    for name, row in results.items():
        print(f"{name:<34}{row['weights']:>9.2f}G{row['activations']:>9.2f}G{row['total']:>9.2f}G"
              f"{row['total'] / plain['total']:>8.2f}x{row['tflop']:>9.2f}{row['tflop'] / plain['tflop']:>8.3f}x")


def vit_b_resident_ratio(method: str) -> float:
    """teacher+student weights ÷ one model for facebook/sam-vit-base's architecture (no download)."""
    from transformers import SamConfig, SamModel

    with torch.device("meta"):
        base = unique_bytes(SamModel(SamConfig()))
    return unique_bytes(build_peft_sam(method=method, device="meta")) / base


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default="sam_adapter")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=96, help="vision width of the timed SAM (ViT-B: 768)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no_memory", action="store_true", help="skip the ViT-B meta-device memory count")
    opts = parser.parse_args()
    fields = sam_fields(opts.image_size, hidden=opts.hidden)
    data, batch = synthetic_batch(opts.batch_size, opts.image_size)
    cache_dir = tempfile.mkdtemp(prefix="bench_cache_")
    trainers = {
        "plain PEFT": make_trainer(build_peft_sam(fields, opts.method), info=False),
        "InfoSAM, full teacher": make_trainer(build_peft_sam(fields, opts.method), info=True, share_prefix=False),
        "InfoSAM + prefix sharing": make_trainer(build_peft_sam(fields, opts.method), info=True),
        "InfoSAM + cache": make_trainer(build_peft_sam(fields, opts.method), info=True, cache_dir=cache_dir, data=data),
    }
    for trainer in trainers.values():
        trainer.create_optimizer()
        train_step(trainer, batch)  # warm-up; fills the cache
    times = dict.fromkeys(trainers, 0.0)
    for _ in range(opts.steps):  # interleaved, so every variant sees the same machine state
        for name, trainer in trainers.items():
            start = time.perf_counter()
            train_step(trainer, batch)
            times[name] += time.perf_counter() - start
    prefix = trainers["InfoSAM + prefix sharing"].prefix_length
    print(f"config: SAM vision hidden {opts.hidden} x 12 blocks (global 2,5,8,11), decoder 64, input {opts.image_size}^2, "
          f"batch {opts.batch_size}, {opts.method} (teacher shares {prefix} encoder stage(s)), {opts.steps} "
          f"interleaved steps, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    plain_ms = 1000 * times["plain PEFT"] / opts.steps
    for name, total in times.items():
        ms = 1000 * total / opts.steps
        print(f"step time   {name:<26} {ms:8.1f} ms   ÷ plain {ms / plain_ms:.2f}x")
    one_model = unique_bytes(load_sam(sam_config=fields, seed=0))
    with_copy = unique_bytes(trainers["InfoSAM, full teacher"].model, load_sam(sam_config=fields, seed=1))
    print(f"resident    teacher+student, shared weights: {unique_bytes(trainers['plain PEFT'].model) / one_model:.3f}x "
          f"one model; with a separate teacher copy: {with_copy / one_model:.3f}x")
    print(f"resident    SAM ViT-B ({opts.method}, counted on meta): {vit_b_resident_ratio(opts.method):.3f}x one model")
    if not opts.no_memory:
        print_memory(meta_peak_memory(opts.method), f"peak memory of one ViT-B step, 1024^2, batch 4, {opts.method}, "
                                                     "float32 (meta-device count, see meta_memory.py)")
        print("(SDPA is counted as its math decomposition here: a GPU's fused attention kernels keep less.)")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
