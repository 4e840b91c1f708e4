"""Helpers shared by the tests: tiny random SAMs and batches, small data folders, the demo recipe and its fast
options (never a real-size SAM on CPU). Tests import them as ``from tests.testing_utils import ...``; no test
imports another test module (tests/test_import_layers.py checks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from infosam_hf.data import DataArguments, build_datasets
from infosam_hf.models.sam import load_sam
from infosam_hf.relation import attach_relation_module
from infosam_hf.tuners.registry import build_student

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "recipes" / "demo.yaml")
FAST = ["--synthetic_num_train", "16", "--synthetic_num_eval", "4", "--synthetic_num_test", "8",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--logging_steps", "1"]

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
import json
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
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", FRESH_RELOAD, str(root), *methods], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {method: load_file(str(Path(root) / method / "out.safetensors")) for method in methods}


# method -> (peft_method, options on the tiny SAM, ViT-B adapter parameters, ViT-B LayerNorm parameters)
METHODS = {
    "sam_adapter": ("sam_adapter", {"block_indices": [1]}, 5_917_440, 30_720),
    "sam_adapter_official": ("sam_adapter", {"block_indices": [0, 1], "adapter_init": "official"}, 5_917_440, 30_720),
    "adaptformer": ("adaptformer", {}, 3_550_464, 0),
    "conv_lora": ("conv_lora", {}, 162_432, 0),
    "gsam_lora": ("gsam_lora", {}, 73_728, 0),
    "gsam_conv_lora": ("gsam_conv_lora", {}, 428_688, 0),
    "bitfit": ("bitfit", {}, 102_656, 0),
    "decoder_only": ("decoder_only", {}, 0, 0),
    "lora": ("lora", {}, 12 * 4 * (768 + 3 * 768), 0),
    "dora": ("lora", {"use_dora": True}, 12 * (4 * (768 + 3 * 768) + 3 * 768), 0),
    "loha": ("loha", {"r": 4}, 12 * 2 * 4 * (768 + 3 * 768), 0),
}


def tiny_method(method, base_dir=None, seed=0, **config):
    """A tiny student of ``METHODS[method]`` (``config`` overrides the tiny SAM config)."""
    peft_method, options, _, _ = METHODS[method]
    sam = load_sam(sam_config={**TINY_SAM, **config}, seed=seed) if config else tiny_sam(seed)
    return student_on(sam, peft_method, options, base_dir)


def tiny_data(num_train=8):
    """Synthetic 64² splits (box prompts) built through the public data API."""
    data_args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=num_train, synthetic_num_eval=4,
                              synthetic_num_test=4, synthetic_image_size=64, train_prompt="box")
    return build_datasets(data_args, image_size=64, seed=0)


def save_image(array: np.ndarray, path: Path, **kwargs) -> Path:
    """Write ``array`` as an image at ``path`` (folders made); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def pair_folder(tmp_path: Path, masks: list[np.ndarray], image_fn=None) -> Path:
    """``masks`` as PNG pairs in ``tmp_path/pairs/{images,masks}/NN.png`` (grey images unless ``image_fn``)."""
    root = tmp_path / "pairs"
    for k, mask in enumerate(masks):
        image = image_fn(mask) if image_fn else np.full(mask.shape + (3,), 128, np.uint8)
        save_image(image, root / "images" / f"{k:02d}.png")
        save_image(mask, root / "masks" / f"{k:02d}.png")
    return root


def blob_masks(count: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """``count`` 0/255 masks, each one random rectangle and a stray foreground pixel."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(5, size - 25, 2)
        h, w = rng.integers(8, 20, 2)
        mask[y:y + h, x:x + w] = 255
        mask[rng.integers(0, size), rng.integers(0, size)] = 255  # a stray foreground pixel
        masks.append(mask)
    return masks


# A short training history (the shape Trainer.state.log_history has) for curve and diagnostics tests.
HISTORY = [
    {"step": 0, "test_iou": 0.2, "test_dice": 0.3},
    {"step": 1, "loss": 1.0, "loss_seg": 0.9, "loss_r": -0.2, "loss_d": 0.1, "learning_rate": 1e-3},
    {"step": 2, "loss": 0.8, "loss_seg": 0.7, "loss_r": -0.3, "loss_d": 0.2, "learning_rate": 1e-3},
    {"step": 2, "eval_loss": 0.75, "eval_iou": 0.4, "eval_miou": 0.6, "eval_runtime": 0.1},
    {"step": 3, "loss": 0.6, "loss_seg": 0.5, "loss_r": -0.3, "loss_d": 0.2},
    {"step": 3, "train_loss": 0.8, "train_runtime": 1.0},
    {"step": 3, "test_iou": 0.5, "test_dice": 0.6},
]


def official_layout(embed=32, depth=2, grid=8, patch=8, window=4, global_blocks=(1,), heads=2, mlp=64, width=32,
                    decoder_mlp=64, iou_hidden=32, mask_in=16, decoder_layers=2, downsample=2):
    """Key -> shape of segment_anything's Sam, written from its modules (not from the converter's mapping)."""
    head_dim, attn = embed // heads, width // downsample
    shapes = {"image_encoder.pos_embed": (1, grid, grid, embed),
              "image_encoder.patch_embed.proj.weight": (embed, 3, patch, patch),
              "image_encoder.patch_embed.proj.bias": (embed,)}
    for b in range(depth):
        rel = 2 * (grid if b in global_blocks else window) - 1
        p = f"image_encoder.blocks.{b}."
        shapes.update({p + "norm1.weight": (embed,), p + "norm1.bias": (embed,),
                       p + "attn.rel_pos_h": (rel, head_dim), p + "attn.rel_pos_w": (rel, head_dim),
                       p + "attn.qkv.weight": (3 * embed, embed), p + "attn.qkv.bias": (3 * embed,),
                       p + "attn.proj.weight": (embed, embed), p + "attn.proj.bias": (embed,),
                       p + "norm2.weight": (embed,), p + "norm2.bias": (embed,),
                       p + "mlp.lin1.weight": (mlp, embed), p + "mlp.lin1.bias": (mlp,),
                       p + "mlp.lin2.weight": (embed, mlp), p + "mlp.lin2.bias": (embed,)})
    shapes.update({"image_encoder.neck.0.weight": (width, embed, 1, 1), "image_encoder.neck.1.weight": (width,),
                   "image_encoder.neck.1.bias": (width,), "image_encoder.neck.2.weight": (width, width, 3, 3),
                   "image_encoder.neck.3.weight": (width,), "image_encoder.neck.3.bias": (width,),
                   "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, width // 2),
                   "prompt_encoder.not_a_point_embed.weight": (1, width),
                   "prompt_encoder.no_mask_embed.weight": (1, width)})
    shapes.update({f"prompt_encoder.point_embeddings.{i}.weight": (1, width) for i in range(4)})
    for index, (cin, cout, k) in {0: (1, mask_in // 4, 2), 3: (mask_in // 4, mask_in, 2), 6: (mask_in, width, 1)}.items():
        shapes[f"prompt_encoder.mask_downscaling.{index}.weight"] = (cout, cin, k, k)
        shapes[f"prompt_encoder.mask_downscaling.{index}.bias"] = (cout,)
    for index, channels in {1: mask_in // 4, 4: mask_in}.items():  # LayerNorm2d
        shapes[f"prompt_encoder.mask_downscaling.{index}.weight"] = (channels,)
        shapes[f"prompt_encoder.mask_downscaling.{index}.bias"] = (channels,)

    def attention(prefix, inner):
        for proj in ("q_proj", "k_proj", "v_proj"):
            shapes[f"{prefix}.{proj}.weight"], shapes[f"{prefix}.{proj}.bias"] = (inner, width), (inner,)
        shapes[f"{prefix}.out_proj.weight"], shapes[f"{prefix}.out_proj.bias"] = (width, inner), (width,)

    for layer in range(decoder_layers):
        p = f"mask_decoder.transformer.layers.{layer}"
        attention(p + ".self_attn", width)
        attention(p + ".cross_attn_token_to_image", attn)
        attention(p + ".cross_attn_image_to_token", attn)
        for n in range(1, 5):
            shapes[f"{p}.norm{n}.weight"] = shapes[f"{p}.norm{n}.bias"] = (width,)
        shapes.update({p + ".mlp.lin1.weight": (decoder_mlp, width), p + ".mlp.lin1.bias": (decoder_mlp,),
                       p + ".mlp.lin2.weight": (width, decoder_mlp), p + ".mlp.lin2.bias": (width,)})
    attention("mask_decoder.transformer.final_attn_token_to_image", attn)
    shapes["mask_decoder.transformer.norm_final_attn.weight"] = (width,)
    shapes["mask_decoder.transformer.norm_final_attn.bias"] = (width,)
    shapes.update({"mask_decoder.iou_token.weight": (1, width), "mask_decoder.mask_tokens.weight": (4, width),
                   "mask_decoder.output_upscaling.0.weight": (width, width // 4, 2, 2),
                   "mask_decoder.output_upscaling.0.bias": (width // 4,),
                   "mask_decoder.output_upscaling.1.weight": (width // 4,),
                   "mask_decoder.output_upscaling.1.bias": (width // 4,),
                   "mask_decoder.output_upscaling.3.weight": (width // 4, width // 8, 2, 2),
                   "mask_decoder.output_upscaling.3.bias": (width // 8,)})
    for head, (hidden, out) in {**{f"output_hypernetworks_mlps.{i}": (width, width // 8) for i in range(4)},
                                "iou_prediction_head": (iou_hidden, 4)}.items():
        dims = [width, hidden, hidden, out]
        for i in range(3):
            shapes[f"mask_decoder.{head}.layers.{i}.weight"] = (dims[i + 1], dims[i])
            shapes[f"mask_decoder.{head}.layers.{i}.bias"] = (dims[i + 1],)
    return shapes


# ------------------------------------------------------------------ instance data sets (several objects per image)
INSTANCE_SIZE = 48
BOXES = [(4, 6, 18, 20), (24, 10, 44, 30), (8, 30, 30, 44)]  # x0, y0, x1, y1 (exclusive)


def instance_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (INSTANCE_SIZE, INSTANCE_SIZE, 3), dtype=np.uint8))


def box_mask(box) -> np.ndarray:
    mask = np.zeros((INSTANCE_SIZE, INSTANCE_SIZE), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def coco_json(file_names, images_dir: Path) -> dict:
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for image_id, name in enumerate(file_names, start=1):
        instance_image(image_id).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": INSTANCE_SIZE, "width": INSTANCE_SIZE})
        for k, box in enumerate(BOXES):
            x0, y0, x1, y1 = box
            mask = box_mask(box)
            if k == 0:  # polygon
                segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            elif k == 1:  # compressed RLE
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
            else:  # uncompressed RLE (column-major run lengths)
                flat = mask.flatten(order="F").astype(np.uint8)
                changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
                counts = np.diff(np.concatenate([[0], changes])).tolist()
                segmentation = {"size": [INSTANCE_SIZE, INSTANCE_SIZE], "counts": counts}
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1 + k % 2,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()), "iscrowd": 0,
                                "segmentation": segmentation})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "leaf"}, {"id": 2, "name": "stem"}]}


def make_coco_set(root: Path, nested: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    for split, names in (("train", ["a.png", "b.png"]), ("test", ["c.png"])):
        data = coco_json(names, root / "images")
        path = root / "annotations" / f"instances_{split}.json" if nested else root / f"{split}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(data))
    return root


def make_instance_mask_set(root: Path, csv: bool) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    rows = {"train": ["a", "b"], "test": ["c"]}
    for split, stems in rows.items():
        for seed, stem in enumerate(stems):
            instance_image(seed).save(root / "images" / f"{stem}.png")
            ids = np.zeros((INSTANCE_SIZE, INSTANCE_SIZE), np.uint8)
            for k, box in enumerate(BOXES, start=1):
                ids[box_mask(box)] = k
            Image.fromarray(ids).save(root / "instances" / f"{stem}.png")
        if csv:
            lines = ["image,instances"] + [f"images/{s}.png,instances/{s}.png" for s in stems]
            (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def make_objects_dataset(root: Path) -> Path:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as ImageFeature, List, Value

    features = Features({"image": ImageFeature(), "objects": List({
        "mask": ImageFeature(), "bbox": List(Value("float32")), "category": ClassLabel(names=["leaf", "stem"])})})

    def split(seeds):
        rows = {"image": [], "objects": []}
        for seed in seeds:
            rows["image"].append(instance_image(seed))
            rows["objects"].append([{"mask": Image.fromarray(box_mask(b).astype(np.uint8) * 255),
                                     "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "category": k % 2}
                                    for k, b in enumerate(BOXES)])
        return Dataset.from_dict(rows, features=features)

    DatasetDict({"train": split([0, 1]), "test": split([2])}).save_to_disk(str(root))
    return root
