"""Tiny random SAM models and batches shared by the tests (never real-size SAM on CPU)."""

from __future__ import annotations

import torch

from infosam_hf.models.sam import attach_relation_module, load_sam
from infosam_hf.tuners.registry import build_student

TINY_SAM = {
    "vision_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "window_size": 4,
                      "global_attn_indexes": [1], "image_size": 64, "patch_size": 8, "mlp_dim": 64},
    "mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 2, "mlp_dim": 64, "iou_head_hidden_dim": 32},
    "initializer_range": 0.02,
}


def tiny_sam(seed: int = 0, image_size: int | None = None):
    return load_sam(sam_config=TINY_SAM, image_size=image_size, seed=seed)


def tiny_student(seed: int = 0, sam=None, **peft_options):
    """LoRA student of ``sam`` (default: :func:`tiny_sam`) with its relation module attached."""
    sam = tiny_sam(seed) if sam is None else sam
    attach_relation_module(sam)
    options = {"r": 4, "lora_alpha": 4}
    options.update(peft_options)
    student = build_student(sam, "lora", options)
    # LoRA B starts at zero; perturb it so the student differs from the teacher in the tests.
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed + 1))
    return student


def assert_adapter_off_is_the_base(student, base, batch) -> None:
    """The student with its adapters disabled predicts exactly what the never-wrapped base does, and the
    (perturbed) adapters change the prediction."""
    def forward(model):
        return model(pixel_values=batch["pixel_values"], input_boxes=batch["input_boxes"],
                     multimask_output=False).pred_masks

    with torch.no_grad():
        expected = forward(base)
        with student.disable_adapter():
            teacher_out = forward(student)
        student_out = forward(student)
    torch.testing.assert_close(teacher_out, expected, rtol=0, atol=0)
    assert not torch.allclose(student_out, teacher_out)  # the perturbed LoRA makes the student differ


def captured_over_two_calls(model, batch, later_batch) -> dict:
    """What ``SamFeatureCapture`` keeps from two forwards in one ``record()`` block (the first call's tensors)."""
    from infosam_hf.models import SamFeatureCapture

    capture = SamFeatureCapture(model)
    with torch.no_grad(), capture.record() as feats:
        for inputs in (batch, later_batch):
            model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False)
    capture.remove()
    return feats


def tiny_batch(batch_size: int = 4, size: int = 64, seed: int = 0, prompt: str = "box"):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch_size, size, size)
    boxes = []
    for i in range(batch_size):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        w, h = torch.randint(8, size // 2, (2,), generator=g).tolist()
        labels[i, y0:y0 + h, x0:x0 + w] = 1
        boxes.append([x0, y0, x0 + w - 1, y0 + h - 1])
    batch = {"pixel_values": torch.randn(batch_size, 3, size, size, generator=g), "labels": labels}
    if prompt == "box":
        batch["input_boxes"] = torch.tensor(boxes, dtype=torch.float32).unsqueeze(1)
    else:
        centers = torch.tensor([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes]).view(batch_size, 1, 1, 2)
        batch["input_points"] = centers
        batch["input_labels"] = torch.ones(batch_size, 1, 1, dtype=torch.long)
    return batch


# A tiny random SAM 2: Hiera with four stages (strides 4, 8, 16, 32 on a 64² input), the decoder on
# the 4×4 lowest FPN level, high-resolution skip features at 16² and 8².
TINY_SAM2 = {
    "model_type": "sam2",
    "image_size": 64,
    "backbone_config": {"hidden_size": 8, "embed_dim_per_stage": [8, 16, 32, 64], "blocks_per_stage": [1, 1, 2, 1],
                        "num_attention_heads_per_stage": [1, 1, 2, 2], "window_size_per_stage": [8, 4, 4, 4],
                        "global_attention_blocks": [3], "window_positional_embedding_background_size": [4, 4]},
    "mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 2, "mlp_dim": 64},
    "initializer_range": 0.02,
}


def tiny_sam2(seed: int = 0):
    return load_sam(sam_config=TINY_SAM2, seed=seed)


def tiny_sam2_student(seed: int = 0, **peft_options):
    return tiny_student(seed, sam=tiny_sam2(seed), **peft_options)


def free_port() -> int:
    """A TCP port nobody listens on now (for torch.distributed rendezvous in subprocess tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def perturb_trainable(model, scale: float = 0.2, seed: int = 1) -> None:
    """Random non-zero adapter weights (not the decoder copies), so an ignored or zero-initialised adapter
    cannot pass an equality test."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and "modules_to_save" not in name:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def student_on(sam, method: str, options: dict, base_dir=None):
    """``sam`` with a relation module, wrapped by ``method``; saved first to ``base_dir`` (recorded as its name)
    when given, so a saved adapter finds its base."""
    if base_dir is not None:
        sam.save_pretrained(base_dir)
        sam.name_or_path = sam.config._name_or_path = str(base_dir)
    attach_relation_module(sam)
    return build_student(sam, method, options)


FRESH_RELOAD = """\
import sys, torch
import infosam_hf
from pathlib import Path
from peft import AutoPeftModel
from safetensors.torch import load_file, save_file
root = Path(sys.argv[1]); batch = load_file(str(root / 'inputs.safetensors'))
for method in sys.argv[2:]:
    model = AutoPeftModel.from_pretrained(str(root / method / 'adapter')).eval()
    with torch.no_grad():
        out = model(**batch, multimask_output=False)
    save_file({'masks': out.pred_masks.contiguous(), 'scores': out.iou_scores.contiguous()},
              str(root / method / 'out.safetensors'))
"""


def reload_in_fresh_process(root, methods) -> dict:
    """Reload ``root/<method>/adapter`` with ``AutoPeftModel`` in a new offline Python (after ``import infosam_hf``)
    and predict ``root/inputs.safetensors``; returns {method: {"masks", "scores"}}."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", FRESH_RELOAD, str(root), *methods], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {method: load_file(str(Path(root) / method / "out.safetensors")) for method in methods}
