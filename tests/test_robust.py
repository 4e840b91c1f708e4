"""Nothing lost, nothing silently wrong: output folders, atomic saves, divergence, masks, damaged files, recipe values."""

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from safetensors.torch import save_file

from infosam_hf.data import DataArguments
from infosam_hf.data.decoding import DataError, decode_image
from infosam_hf.data.mask_report import mask_report
from infosam_hf.file_checks import DamagedFileError, check_adapter_dir, read_json_file
from infosam_hf.io import (
    DiskFullError,
    atomic_write_json,
    atomic_write_with,
    replace_files_from,
)
from infosam_hf.training import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.training.divergence import DivergenceError
from infosam_hf.training.output_dir import LOCK_NAME, OutputDirLock, check_output_dir
from infosam_hf.training.recipe import RecipeError
from infosam_hf.training.recipe_checks import (
    check_drop_last,
    check_recipe_values,
    check_target_modules,
)
from infosam_hf.training.resume_check import (
    interrupted_message,
    resolve_resume_checkpoint,
)
from infosam_hf.training.run import parse_train_args, run_training
from infosam_hf.training.teacher_cache import TeacherEmbeddingCache
from tests.testing_utils import tiny_student

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "recipes" / "demo.yaml")
FAST = ["--synthetic_num_train", "8", "--synthetic_num_eval", "4", "--synthetic_num_test", "4",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", "--disable_tqdm", "true",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none"]


def _enospc(*args, **kwargs):
    raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                       '"No space left on device" })')


# ------------------------------------------------------------------ output folders
def test_a_finished_run_or_checkpoints_are_never_overwritten(tmp_path):
    for marker in ("adapter_config.json", "checkpoint-10"):
        out = tmp_path / marker.split(".")[0]
        out.mkdir()
        (out / marker).mkdir() if marker.startswith("checkpoint") else (out / marker).write_text("{}")
        with pytest.raises(RecipeError, match="holds an earlier run .*resume_from_checkpoint true.*overwrite_output_dir"):
            check_output_dir(str(out), None, False)
        check_output_dir(str(out), None, True)  # asked for
        check_output_dir(str(out), "true", False)  # resuming it
    check_output_dir(str(tmp_path / "new"), None, False)
    for bad in ("", "  "):
        with pytest.raises(RecipeError, match="output_dir is empty"):
            check_output_dir(bad, None, False)


def test_a_second_run_into_a_finished_folder_stops_before_any_model_loads(tmp_path, monkeypatch):
    import infosam_hf.training.run as pipeline

    (tmp_path / "adapter_model.safetensors").write_bytes(b"first run")
    monkeypatch.setattr(pipeline, "build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(RecipeError, match="holds an earlier run"):
        run_training(*parse_train_args([DEMO, "--output_dir", str(tmp_path), *FAST]))
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == b"first run"


def test_lock_keeps_a_concurrent_run_out_and_a_stale_lock_is_taken_over(tmp_path, caplog):
    import socket

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{live.pid} {socket.gethostname()}\n")
        with pytest.raises(RecipeError, match=f"in use by another run \\(pid {live.pid}\\)"):
            OutputDirLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
    lock = OutputDirLock(tmp_path).acquire()  # the process is gone: taken over, with a line
    assert "stale lock" in caplog.text and (tmp_path / LOCK_NAME).read_text().startswith(str(os.getpid()))
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


# ------------------------------------------------------------------ atomic writes, full disk
def test_failed_writes_leave_the_previous_file_intact(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"iou": 0.5})

    def half_written(temp):
        Path(temp).write_text('{"iou": 0.')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=f"no space left on {tmp_path} \\(needs ~1 MB"):
        atomic_write_with(target, half_written)
    assert json.loads(target.read_text()) == {"iou": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "weights").write_bytes(b"old")

    def save(staging):
        (staging / "weights").write_bytes(b"new, half")
        _enospc()

    with pytest.raises(DiskFullError, match="no space left on .*adapter \\(needs ~5 MB"):
        replace_files_from(folder, save, needed_bytes=5 * 2**20)
    assert (folder / "weights").read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 2


def _trainer(tmp_path, **kwargs):
    args = InfoSAMConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, lambda_r=0.0, lambda_d=0.0,
                         **kwargs)
    return InfoSAMTrainer(model=tiny_student(), args=args)


def test_save_model_on_a_full_disk_keeps_the_adapter_and_says_so(tmp_path, monkeypatch):
    import peft.peft_model

    trainer = _trainer(tmp_path)
    trainer.save_model()
    saved = (tmp_path / "adapter_model.safetensors").read_bytes()
    with torch.no_grad():
        next(p for p in trainer.model.parameters() if p.requires_grad).add_(1.0)
    monkeypatch.setattr(peft.peft_model, "safe_save_file", _enospc)
    with pytest.raises(DiskFullError, match="no space left on .* \\(needs ~1 MB"):
        trainer.save_model()
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == saved
    assert not [p for p in tmp_path.parent.iterdir() if ".saving-" in p.name]


# ------------------------------------------------------------------ divergence
def test_non_finite_or_exploded_weights_are_never_saved(tmp_path):
    trainer = _trainer(tmp_path, learning_rate=10.0, max_grad_norm=0.0)
    trainer.state.global_step = 7
    param = next(p for p in trainer.model.parameters() if p.requires_grad)
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(DivergenceError, match="diverged at step 7: .*NaN.*learning_rate=10 too high.*clipping off"):
        trainer.save_model()
    assert not (tmp_path / "adapter_model.safetensors").exists()
    with torch.no_grad():
        param.view(-1)[0] = 1e9
    with pytest.raises(DivergenceError, match="reached \\|w\\| = 1e\\+09"):
        trainer.log({"loss": 0.5})


def test_a_non_finite_segmentation_loss_stops_at_the_log(tmp_path):
    trainer = _trainer(tmp_path, max_grad_norm=1.0)
    trainer.state.global_step = 3
    trainer._accumulate({"loss_seg": torch.tensor(float("nan"))})
    with pytest.raises(DivergenceError, match="step 3: loss_seg is nan; likely cause: learning_rate") as err:
        trainer.log({"loss": 0.0})  # Trainer's NaN filter shows a finite loss: the component tells
    assert "clipping" not in str(err.value)


@pytest.mark.slow
def test_diverging_run_exits_with_one_line_and_no_adapter(tmp_path):
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "infosam_hf", "train", DEMO, "--output_dir", str(out), *FAST,
                          "--max_steps", "3", "--learning_rate", "1e8", "--max_grad_norm", "0",
                          "--test_split", "null"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged at step" in errors[0] and "max_grad_norm" in errors[0]
    assert not (out / "adapter_model.safetensors").exists() and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ data sanity
def _mask_split(masks, images=None):
    images = images or [PILImage.fromarray(np.full((32, 32, 3), 120 + i, np.uint8)) for i in range(len(masks))]
    return Dataset.from_dict({"image": images, "label": masks}, features=Features({"image": Image(), "label": Image()}))


def _masks(values, count=4):
    masks = []
    for i in range(count):
        array = np.zeros((32, 32), np.uint8)
        array[4 + i:20, 4:20] = values[1]
        masks.append(PILImage.fromarray(array))
    return masks


@pytest.mark.parametrize("values", [(0, 100), (0, 2)])
def test_masks_whose_objects_decode_empty_stop_with_the_values_seen(values):
    with pytest.raises(DataError, match=f"every mask decodes as empty: values seen \\{{0, {values[1]}\\}}.*mask_threshold: 0"):
        mask_report({"train": _mask_split(_masks(values))}, DataArguments(dataset_name_or_path="synthetic"))
    stats = mask_report({"train": _mask_split(_masks(values))},
                        DataArguments(dataset_name_or_path="synthetic", mask_threshold=0))
    assert stats[0].empty == 0 and stats[0].foreground > 0.1


def test_num_labels_that_turn_objects_into_ignore_is_an_error(caplog):
    two = DataArguments(dataset_name_or_path="synthetic", num_labels=2, train_prompt="none", eval_prompt="none")
    with pytest.raises(DataError, match="every object becomes ignore_index=255: values seen \\{0, 255\\}.*mask_value_map"):
        mask_report({"train": _mask_split(_masks((0, 255)))}, two)
    two.mask_value_map = {255: 1}
    assert mask_report({"train": _mask_split(_masks((0, 255)))}, two)[0].objects_to_ignore == 0
    mixed = _masks((0, 1), 3) + _masks((0, 7), 1)
    two.mask_value_map = None
    mask_report({"train": _mask_split(mixed)}, two)
    assert "1 mask(s) hold values outside 0..1" in caplog.text


def test_all_empty_split_stops_and_some_empty_warn_once_with_counts(caplog):
    args = DataArguments(dataset_name_or_path="synthetic")
    empty = [PILImage.fromarray(np.zeros((32, 32), np.uint8)) for _ in range(3)]
    with pytest.raises(DataError, match="every mask is empty"):
        mask_report({"test": _mask_split(empty)}, args)
    mask_report({"train": _mask_split(_masks((0, 255), 3) + empty[:1])}, args)
    assert caplog.text.count("1 mask(s) are empty") == 1


def test_swapped_image_and_mask_columns_are_caught():
    rng = np.random.default_rng(0)
    photos = [PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    with pytest.raises(DataError, match="image_column and mask_column swapped"):
        mask_report({"train": _mask_split(photos, images=_masks((0, 255), 3))}, DataArguments(dataset_name_or_path="x"))


def test_a_nan_pixel_does_not_blacken_a_float_image(tmp_path):
    array = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    array[3, 3] = np.nan
    path = tmp_path / "float.tif"
    PILImage.fromarray(array, mode="F").save(path)
    image, _ = decode_image(str(path))
    pixels = np.asarray(image)
    assert pixels.max() == 255 and pixels[3, 3].max() == 0


def test_ignore_index_inside_the_class_range_is_an_error():
    model, peft, data, args = parse_train_args([DEMO, "--output_dir", "x", "--num_labels", "3", "--ignore_index", "1",
                                                "--train_prompt", "none", "--eval_prompt", "none"])
    with pytest.raises(RecipeError, match="ignore_index=1 is one of the num_labels=3 class ids"):
        check_recipe_values(model, peft, data, args)


# ------------------------------------------------------------------ damaged files
def _adapter(folder, tensors=None, **config):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, **config}))
    tensors = {"a.lora_A.weight": torch.zeros(4, 8)} if tensors is None else tensors
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def test_damaged_adapters_are_named_with_what_is_wrong(tmp_path):
    assert check_adapter_dir(_adapter(tmp_path / "ok"))["r"] == 4
    truncated = _adapter(tmp_path / "truncated")
    data = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    cases = {truncated: "damaged or truncated safetensors", _adapter(tmp_path / "empty", tensors={}): "no tensors",
             _adapter(tmp_path / "rank", r=8): "rank 4, but .* says r=8",
             _adapter(tmp_path / "type", peft_type="NOPE"): "unknown peft_type 'NOPE'"}
    bad_json = _adapter(tmp_path / "json")
    (bad_json / "adapter_config.json").write_text("{not json")
    cases[bad_json] = "adapter_config.json: the adapter config is not valid JSON"
    for folder, message in cases.items():
        with pytest.raises(DamagedFileError, match=message):
            check_adapter_dir(folder)
    (tmp_path / "run_args.json").write_text("")
    with pytest.raises(DamagedFileError, match="run_args.json: the run record is empty"):
        read_json_file(tmp_path / "run_args.json", "the run record")


def test_predict_names_a_corrupt_run_record(tmp_path):
    from infosam_hf.models.inference import run_input_settings

    (tmp_path / "run_args.json").write_text("{truncated")
    with pytest.raises(DamagedFileError, match="run_args.json: the run record is not valid JSON"):
        run_input_settings(str(tmp_path))


def test_resume_checkpoints_are_checked_up_front(tmp_path):
    with pytest.raises(RecipeError, match="resume_from_checkpoint: true, but .* holds no complete checkpoint-N"):
        resolve_resume_checkpoint("true", str(tmp_path))
    good = _adapter(tmp_path / "checkpoint-2")
    (good / "trainer_state.json").write_text("{}")
    half = _adapter(tmp_path / "checkpoint-4")  # no trainer_state.json: the save did not finish
    with pytest.raises(RecipeError, match="checkpoint-4': incomplete checkpoint"):
        resolve_resume_checkpoint(str(half), str(tmp_path))
    with pytest.raises(RecipeError, match="no optimizer.pt / scheduler.pt: the optimizer would silently restart"):
        resolve_resume_checkpoint("true", str(tmp_path))
    assert resolve_resume_checkpoint("true", str(tmp_path), model_only=True) == str(good)
    for name in ("optimizer.pt", "scheduler.pt"):
        (good / name).write_bytes(b"x")
    assert resolve_resume_checkpoint("true", str(tmp_path), "LORA", {"r": 4}) == str(good)
    with pytest.raises(RecipeError, match="trained with r=4, this run sets r=16"):
        resolve_resume_checkpoint(str(good), str(tmp_path), "LORA", {"r": 16})
    with pytest.raises(RecipeError, match="holds a LORA adapter, but this run trains SAM_ADAPTER"):
        resolve_resume_checkpoint(str(good), str(tmp_path), "SAM_ADAPTER")
    assert "resume from checkpoint-2 with --resume_from_checkpoint true" in interrupted_message(5, str(tmp_path))


def test_damaged_teacher_cache_entries_are_recomputed(tmp_path, caplog):
    cache = TeacherEmbeddingCache({"k": 1}, root=tmp_path)
    cache.put([0, 1, 2], torch.ones(3, 4, 2, 2))
    entries = {i: cache.directory / f"{i}.safetensors" for i in range(3)}
    entries[0].write_bytes(entries[0].read_bytes()[:20])  # truncated
    save_file({"image_embeddings": torch.ones(5, 2, 2)}, str(entries[1]))  # mis-shaped
    assert cache.get([2], dtype=torch.float32) is not None
    assert cache.get([0, 1, 2]) is None and not entries[0].exists() and not entries[1].exists()
    assert caplog.text.count("is damaged") == 2
    cache.put([0, 1], torch.ones(2, 4, 2, 2))
    assert cache.get([0, 1, 2]).shape == (3, 4, 2, 2)


def test_teacher_cache_key_covers_file_content(tmp_path):
    from infosam_hf.training.teacher_cache import _file_stats_digest

    path = tmp_path / "a.raw"
    path.write_bytes(b"A" * 64)
    dataset = Dataset.from_dict({"image": [str(path)]}, features=Features({"image": Value("string")}))
    before, stat = _file_stats_digest(dataset, "image"), path.stat()
    path.write_bytes(b"B" * 64)  # replaced in place: same size, same mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and _file_stats_digest(dataset, "image") != before


# ------------------------------------------------------------------ recipe values
@pytest.mark.parametrize(("extra", "message"), [
    (["--image_size", "-64"], "image_size=-64 must be a positive"),
    (["--image_size", "100"], "image_size=100 is not a multiple of the patch size 8"),
    (["--dynamic_input_size", "true", "--resize", "[2, 2]"], "resize=2 is too small"),
    (["--learning_rate", "-1"], "learning_rate=-1.0 must be a finite number > 0"),
    (["--learning_rate", "nan"], "learning_rate=nan must be"),
    (["--max_steps", "0"], "max_steps=0 trains nothing"),
    (["--peft_config.r", "0"], "peft_config.r=0 must be >= 1"),
])
def test_bad_recipe_values_are_one_line_before_loading(extra, message):
    with pytest.raises(RecipeError, match=message):
        check_recipe_values(*parse_train_args([DEMO, "--output_dir", "x", *extra]))


def test_patch_multiple_inside_sam_config_and_cache_folder_that_is_a_file(tmp_path, monkeypatch):
    model, peft, data, args = parse_train_args([DEMO, "--output_dir", "x"])
    model.sam_config = {**model.sam_config, "vision_config": {**model.sam_config["vision_config"], "image_size": 100}}
    with pytest.raises(RecipeError, match="sam_config.vision_config.image_size=100 is not a multiple"):
        check_recipe_values(model, peft, data, args)
    (tmp_path / "file").write_text("")
    model, peft, data, args = parse_train_args([DEMO, "--output_dir", "x", "--teacher_cache_dir", str(tmp_path / "file")])
    with pytest.raises(RecipeError, match="teacher_cache_dir=.* is a file"):
        check_recipe_values(model, peft, data, args)
    monkeypatch.setenv("INFOSAM_TEACHER_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(RecipeError, match="INFOSAM_TEACHER_CACHE_DIR=.* is a file"):
        check_recipe_values(*parse_train_args([DEMO, "--output_dir", "x"]))


def test_target_modules_typo_gets_close_matches_and_drop_last_vs_rows():
    names = ["vision_encoder.layers.0.attn.qkv", "vision_encoder.layers.0.attn.proj"]
    check_target_modules(type("C", (), {"target_modules": ["qkv"]})(), names, "lora")
    with pytest.raises(RecipeError, match="'qvk' is no module of the model \\(lora\\); did you mean qkv"):
        check_target_modules(type("C", (), {"target_modules": ["qvk"]})(), names, "lora")
    args = InfoSAMConfig(output_dir="x", per_device_train_batch_size=8, dataloader_drop_last=True, report_to="none")
    with pytest.raises(RecipeError, match="3 row\\(s\\), fewer than one batch of 8"):
        check_drop_last(3, args)


def test_target_modules_typo_stops_run_before_loading(tmp_path, monkeypatch):
    import infosam_hf.training.run as pipeline

    monkeypatch.setattr(pipeline, "build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(RecipeError, match="did you mean qkv"):
        run_training(*parse_train_args([DEMO, "--output_dir", str(tmp_path / "o"), *FAST,
                                        "--peft_config.target_modules", "[qvk]"]))


def test_ctrl_c_ends_with_one_line_exit_130_and_a_resumable_checkpoint(tmp_path, monkeypatch, capsys):
    from transformers import TrainerCallback

    import infosam_hf.training.run as pipeline

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    class Interrupted(InfoSAMTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(CtrlC())

    monkeypatch.setattr(pipeline, "InfoSAMTrainer", Interrupted)
    out = tmp_path / "run"
    argv = [DEMO, "--output_dir", str(out), *FAST, "--max_steps", "4", "--test_split", "null",
            "--save_strategy", "steps", "--save_steps", "1"]
    with pytest.raises(SystemExit) as stop:
        run_training(*parse_train_args(argv))
    assert stop.value.code == 130 and not (out / LOCK_NAME).exists()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("interrupted at step 2; resume from checkpoint-1 with --resume_from_checkpoint true")
    monkeypatch.undo()
    run_training(*parse_train_args([*argv, "--resume_from_checkpoint", "true"]))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4


def test_all_empty_or_all_void_targets_never_score_silently(caplog):
    from infosam_hf.evaluation.metrics import SegmentationMetrics

    binary = SegmentationMetrics()
    binary.update(torch.full((2, 1, 16, 16), -8.0), torch.zeros(2, 16, 16))
    binary.compute()
    assert "ground truth is all empty" in caplog.text
    classes = SegmentationMetrics(num_labels=3, ignore_index=255)
    classes.update(torch.zeros(1, 3, 8, 8), torch.full((1, 8, 8), 255))
    assert math.isnan(classes.compute()["miou"]) and "every pixel is ignore_index=255" in caplog.text


def test_relation_from_a_truncated_adapter_names_the_file(tmp_path):
    from infosam_hf.relation import load_relation_state_dict

    folder = _adapter(tmp_path / "adapter")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:30])
    with pytest.raises(DamagedFileError, match="adapter_model.safetensors: damaged or truncated safetensors"):
        load_relation_state_dict(str(folder))


def test_a_full_disk_stops_the_teacher_cache_not_the_run(tmp_path, monkeypatch, caplog):
    import infosam_hf.training.teacher_cache as teacher_cache

    cache = TeacherEmbeddingCache({"k": 2}, root=tmp_path)
    monkeypatch.setattr(teacher_cache, "save_file", _enospc)
    cache.put([0, 1], torch.ones(2, 4, 2, 2))
    assert cache.disk_full and len(cache) == 0 and caplog.text.count("no space left on") == 1
    assert not [p for p in cache.directory.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_ctrl_c_outside_the_training_loop_is_one_line_too(tmp_path, monkeypatch, capsys):
    import infosam_hf.commands.train as train_command
    import infosam_hf.training as training

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_training", interrupted)  # the command imports it when it runs
    assert train_command.main([DEMO, "--output_dir", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == ("interrupted; no checkpoint was saved yet, so a new run starts over "
                                               "(save_steps sets how often checkpoints are written)")
