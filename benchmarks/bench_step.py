#!/usr/bin/env python
"""Benchmark: optimiser-step time of plain PEFT (structure loss only) vs InfoSAM, and resident weights.

Both variants run on the same model config and the same batch, interleaved in one process, so the
ratio is measured side by side. Usage: ``python benchmarks/bench_step.py [--image_size 256] [--steps 20]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from infosam_hf import InfoSAMConfig, InfoSAMTrainer  # noqa: E402
from infosam_hf.data import SamPromptCollator, make_synthetic_dataset, with_sam_transform  # noqa: E402
from infosam_hf.data import DataArguments  # noqa: E402
from infosam_hf.models.sam import attach_relation_module, load_sam  # noqa: E402
from infosam_hf.tuners.registry import build_student  # noqa: E402


def sam_fields(image_size: int) -> dict:
    return {
        "vision_config": {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "window_size": 8,
                          "global_attn_indexes": [1, 3], "image_size": image_size, "patch_size": 16,
                          "mlp_dim": 384},
        "mask_decoder_config": {"hidden_size": 64, "num_attention_heads": 4, "mlp_dim": 256},
        "initializer_range": 0.02,
    }


def unique_param_bytes(*modules) -> int:
    seen, total = set(), 0
    for module in modules:
        for param in module.parameters():
            if param.data_ptr() not in seen:
                seen.add(param.data_ptr())
                total += param.numel() * param.element_size()
    return total


def make_trainer(fields, lambda_r, lambda_d, teacher=None):
    sam = load_sam(sam_config=fields, seed=0)
    attach_relation_module(sam)
    student = build_student(sam)
    args = InfoSAMConfig(output_dir="/tmp/bench_step", lambda_r=lambda_r, lambda_d=lambda_d, report_to="none",
                         use_cpu=True, learning_rate=1e-4)
    trainer = InfoSAMTrainer(model=student, args=args, teacher_model=teacher)
    trainer.create_optimizer()
    return trainer


def step(trainer, batch):
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    opts = parser.parse_args()
    fields = sam_fields(opts.image_size)
    data = make_synthetic_dataset(opts.batch_size, 0, 0, image_size=opts.image_size, seed=0)["train"]
    data = with_sam_transform(data, DataArguments(train_prompt="box"), opts.image_size, train=True)
    batch = SamPromptCollator()([data[i] for i in range(opts.batch_size)])

    plain = make_trainer(fields, 0.0, 0.0)
    info = make_trainer(fields, 1.0, 0.5)
    for trainer in (plain, info):  # warm-up
        step(trainer, batch)
    times = {"plain": 0.0, "infosam": 0.0}
    for _ in range(opts.steps):  # interleaved, so both see the same machine state
        for name, trainer in (("plain", plain), ("infosam", info)):
            start = time.perf_counter()
            step(trainer, batch)
            times[name] += time.perf_counter() - start
    plain_ms = 1000 * times["plain"] / opts.steps
    info_ms = 1000 * times["infosam"] / opts.steps

    one_model = unique_param_bytes(load_sam(sam_config=fields, seed=0))
    shared = unique_param_bytes(info.model)
    separate_teacher = load_sam(sam_config=fields, seed=1)
    with_copy = unique_param_bytes(info.model, separate_teacher)

    print(f"config: SAM vision hidden 96 x 4 layers, decoder 64, input {opts.image_size}^2, batch "
          f"{opts.batch_size}, LoRA r=4 on qkv + mask decoder, {opts.steps} interleaved steps, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"step time   plain PEFT (structure loss): {plain_ms:8.1f} ms")
    print(f"step time   InfoSAM (+ teacher, loss_r, loss_d): {info_ms:8.1f} ms")
    print(f"ratio       InfoSAM / plain: {info_ms / plain_ms:.2f}x")
    print(f"weights     one SAM: {one_model / 2**20:.2f} MiB")
    print(f"resident    teacher+student (adapters-off teacher, shared base): {shared / one_model:.3f}x one model")
    print(f"resident    with a separate teacher copy, for contrast: {with_copy / one_model:.3f}x one model")
    vit_b = vit_b_resident_ratio()
    print(f"resident    same layout for SAM ViT-B at 1024^2 (counted on the meta device): {vit_b:.3f}x one model")


def vit_b_resident_ratio() -> float:
    """teacher+student weights ÷ one model for facebook/sam-vit-base's architecture (no download)."""
    from transformers import SamConfig, SamModel

    with torch.device("meta"):
        sam = SamModel(SamConfig())
        base = sum(p.numel() for p in sam.parameters())
        attach_relation_module(sam)
        student = build_student(sam)
    total = sum(p.numel() for p in student.parameters())
    return total / base


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
