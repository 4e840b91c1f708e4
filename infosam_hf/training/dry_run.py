"""``--dry_run``: any recipe as a short CPU rehearsal before a real run.

The recipe is kept as it is (data, tuner, variant, losses, protocol, validation) except for what makes it
expensive: the model becomes a small random one of the same family (SAM or SAM 2), deep enough for the
tuner's ``block_indices``; every input size shrinks about eight-fold; each split keeps a few examples;
the run trains one short epoch on the CPU, evaluates, saves to a temporary folder and reloads the adapter.
Nothing is downloaded: Hub checkpoints and the GSAM ResNet weights are replaced by random ones.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DRY_RUN_FLAG", "wants_dry_run", "dry_run_overrides", "prune_weights", "shrink_size", "tiny_config_for"]

DRY_RUN_FLAG = "--dry_run"
TRAIN_BATCHES = 2  # one epoch of this many training steps
EVAL_EXAMPLES = 4
MAX_BATCH = 2
SHRINK = 8  # input sizes are divided by this ...
MIN_SIDE = 64  # ... and kept at least this large, in multiples of
SIDE_STEP = 16  # the tiny model's patch size
MAX_CLICKS = 2  # eval_clicks: simulated clicks per evaluated image
VIT_B_GLOBAL_BLOCKS = (2, 5, 8, 11)
TINY_WIDTH = 32
SAM2_TINY = {  # a 5-block Hiera, as recipes/demo_sam2.yaml
    "model_type": "sam2", "image_size": 128,
    "backbone_config": {"hidden_size": 16, "embed_dim_per_stage": [16, 32, 64, 128], "blocks_per_stage": [1, 1, 2, 1],
                        "num_attention_heads_per_stage": [1, 1, 2, 2], "window_size_per_stage": [8, 4, 4, 4],
                        "global_attention_blocks": [3], "window_positional_embedding_background_size": [4, 4]},
    "mask_decoder_config": {"hidden_size": TINY_WIDTH, "num_attention_heads": 2, "mlp_dim": 64,
                            "iou_head_hidden_dim": TINY_WIDTH},
    "initializer_range": 0.02,
}


def wants_dry_run(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """Whether ``argv`` asks for a dry run (``--dry_run``, ``--dry_run true``/``false``), and ``argv`` without it."""
    rest, wanted, index = [], False, 0
    argv = list(argv)
    while index < len(argv):
        token = argv[index]
        if token == DRY_RUN_FLAG or token.startswith(DRY_RUN_FLAG + "="):
            value = token.partition("=")[2]
            if not value and index + 1 < len(argv) and argv[index + 1].lower() in ("true", "false", "1", "0"):
                value = argv[index + 1]
                index += 1
            wanted = value.lower() not in ("false", "0")
        else:
            rest.append(token)
        index += 1
    return wanted, rest


def shrink_size(side: int) -> int:
    """An input side divided by :data:`SHRINK`, rounded to the tiny model's patch, at least :data:`MIN_SIDE`."""
    return max(MIN_SIDE, int(round(side / SHRINK / SIDE_STEP)) * SIDE_STEP)


def _required_depth(peft_config: dict[str, Any]) -> int:
    indices = peft_config.get("block_indices") or []
    first = peft_config.get("first_block")
    needed = max([int(i) + 1 for i in indices] + ([int(first) + 1] if first is not None else []) + [2])
    return needed


def _is_sam2_recipe(model_args) -> bool:
    config = model_args.sam_config or {}
    if config.get("model_type") == "sam2":
        return True
    name = str(model_args.model_name_or_path or "")
    local = Path(name) / "config.json"
    if local.is_file():
        try:
            return json.loads(local.read_text()).get("model_type", "").startswith("sam2")
        except (OSError, ValueError):
            return False
    return "sam2" in name.lower()


def tiny_config_for(model_args, peft_args, image_size: int) -> dict[str, Any]:
    """``sam_config`` of a small random model of the recipe's family, deep enough for its tuner."""
    if _is_sam2_recipe(model_args):
        return json.loads(json.dumps(SAM2_TINY))
    depth = _required_depth(peft_args.peft_config or {})
    global_blocks = [i for i in VIT_B_GLOBAL_BLOCKS if i < depth] or [depth - 1]
    return {
        "vision_config": {"hidden_size": TINY_WIDTH, "num_hidden_layers": depth, "num_attention_heads": 2,
                          "window_size": 4, "global_attn_indexes": global_blocks, "image_size": image_size,
                          "patch_size": SIDE_STEP, "mlp_dim": 2 * TINY_WIDTH},
        "mask_decoder_config": {"hidden_size": TINY_WIDTH, "num_attention_heads": 2, "mlp_dim": 2 * TINY_WIDTH,
                                "iou_head_hidden_dim": TINY_WIDTH},
        "initializer_range": 0.02,
    }


def _cli(key: str, value: Any) -> list[str]:
    return [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) or value is None else str(value)]


def dry_run_overrides(model_args, peft_args, data_args, args, output_dir: str) -> tuple[list[str], list[str]]:
    """Command-line overrides that turn the parsed recipe into a rehearsal, and one note per change for the log."""
    notes: list[str] = []
    native = model_args.image_size or 1024
    image_size = 128 if _is_sam2_recipe(model_args) else shrink_size(native)
    sam_config = tiny_config_for(model_args, peft_args, image_size)
    depth = sam_config.get("vision_config", {}).get("num_hidden_layers")
    source = model_args.model_name_or_path or "sam_config"
    notes.append(f"model: {source} -> a random {'SAM 2' if 'backbone_config' in sam_config else 'SAM'}"
                 + (f" of {depth} blocks" if depth else "") + f" at {image_size}px")
    cli = _cli("model_name_or_path", None) + _cli("sam_config", sam_config)
    if model_args.image_size:
        cli += _cli("image_size", image_size)
    for key in ("teacher_model_name_or_path", "relation_from"):
        if getattr(model_args, key):
            cli += _cli(key, None)
            notes.append(f"{key}: {getattr(model_args, key)} not loaded (the tiny student is its own teacher)")
    if (peft_args.peft_config or {}).get("resnet_weights"):
        cli += ["--peft_config.resnet_weights", "null"]
        notes.append("peft_config.resnet_weights: random ResNet branch (nothing downloaded)")
    for key in ("resize", "random_crop"):
        value = getattr(data_args, key)
        if value:
            small = [shrink_size(side) for side in value]
            cli += _cli(key, small)
            notes.append(f"{key}: {list(value)} -> {small}")
    train_batch = min(args.per_device_train_batch_size, MAX_BATCH)
    eval_batch = min(args.per_device_eval_batch_size, MAX_BATCH)
    examples = train_batch * TRAIN_BATCHES
    if data_args.dataset_name_or_path == "synthetic":
        cli += _cli("synthetic_num_train", examples) + _cli("synthetic_num_eval", EVAL_EXAMPLES)
        cli += _cli("synthetic_num_test", EVAL_EXAMPLES) + _cli("synthetic_image_size", 64)
    else:
        train_rows = examples
        if not data_args.eval_split and data_args.validation_split_percentage:  # half of the rows are held out
            train_rows = 2 * max(examples, EVAL_EXAMPLES)
            cli += _cli("validation_split_percentage", 50)
        cli += _cli("max_train_samples", train_rows) + _cli("max_eval_samples", EVAL_EXAMPLES)
    cli += _cli("per_device_train_batch_size", train_batch) + _cli("per_device_eval_batch_size", eval_batch)
    cli += _cli("gradient_accumulation_steps", 1) + _cli("num_train_epochs", 1) + _cli("max_steps", -1)
    if args.eval_clicks > MAX_CLICKS:
        cli += _cli("eval_clicks", MAX_CLICKS)
        notes.append(f"eval_clicks: {args.eval_clicks} -> {MAX_CLICKS}")
    if args.protocol == "official":
        cli += _cli("protocol_epochs", [1])
    if args.eval_strategy != "no" or args.save_strategy != "no":
        cli += _cli("eval_steps", TRAIN_BATCHES) + _cli("save_steps", TRAIN_BATCHES)
    cli += _cli("logging_steps", 1) + _cli("use_cpu", True) + _cli("bf16", False) + _cli("fp16", False)
    cli += _cli("dataloader_num_workers", 0) + _cli("report_to", "none") + _cli("push_to_hub", False)
    cli += _cli("disable_tqdm", True) + _cli("output_dir", output_dir) + _cli("resume_from_checkpoint", None)
    cli += _cli("teacher_cache_dir", str(Path(output_dir) / "teacher_cache"))
    notes.append(f"data: {examples} training examples, {EVAL_EXAMPLES} per evaluated split; one epoch of "
                 f"{TRAIN_BATCHES} steps at batch {train_batch}; CPU; output in {output_dir}")
    return cli, notes


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def dry_run_output_dir(recipe: str | None) -> str:
    """A new temporary folder for the rehearsal's outputs (its small files are kept, so the user can look at them:
    see :func:`prune_weights`)."""
    stem = Path(recipe).stem if recipe else "recipe"
    return tempfile.mkdtemp(prefix=f"infosam-dry-run-{stem}-")


def run_dry(argv: Sequence[str], parse, run) -> dict[str, Any]:
    """Parse ``argv`` with ``parse``, rewrite it as a rehearsal, train with ``run`` and reload the adapter."""
    from ..models.inference import load_for_inference

    start = time.perf_counter()
    model_args, peft_args, data_args, args = parse(argv)
    recipe = argv[0] if argv and not str(argv[0]).startswith("--") else None
    output_dir = dry_run_output_dir(recipe)
    overrides, notes = dry_run_overrides(model_args, peft_args, data_args, args, output_dir)
    print("Dry run of " + (recipe or "the command line") + ":\n" + "\n".join(f"  {note}" for note in notes))
    try:
        results = run(*parse(list(argv) + overrides))
        model = load_for_inference(output_dir)  # the saved adapter loads as a user would load it
        del model
    finally:
        freed = prune_weights(output_dir)
    seconds = time.perf_counter() - start
    print(f"\nDry run passed in {seconds:.0f} s: recipe, data, training, evaluation, saving and reloading work. "
          f"Outputs (the weights, {freed / 2**20:.0f} MB, removed): {output_dir}")
    results["dry_run"] = {"output_dir": output_dir, "seconds": seconds, "notes": notes}
    return results


def prune_weights(output_dir: str | Path) -> int:
    """Delete the rehearsal's weights (adapter, built base, checkpoints: up to hundreds of MB per run, in the
    temporary folder) and keep the rest (card, results, curves, logs). Returns the bytes freed."""
    freed = 0
    root = Path(output_dir)
    for path in sorted(root.rglob("*"), reverse=True):  # files before their folders
        if path.is_file() and (path.suffix in WEIGHT_SUFFIXES or any(part.startswith("checkpoint-")
                                                                     for part in path.relative_to(root).parts)):
            freed += path.stat().st_size
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if root.is_dir() and not any(root.iterdir()):  # a rehearsal that stopped before writing anything
        root.rmdir()
    return freed
