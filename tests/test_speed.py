"""Speed features: the teacher-embedding cache and frozen-prefix sharing change no loss and no gradient."""

import logging

import pytest
import torch

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.data import DataArguments, SamPromptCollator, build_datasets
from infosam_hf.data.collator import INDEX_KEY
from infosam_hf.models.capture import SamFeatureCapture
from infosam_hf.relation import attach_relation_module
from infosam_hf.training.teacher_pass import shared_prefix_length
from infosam_hf.tuners.registry import build_student
from tests.testing_utils import TINY_SAM, free_port, perturb_trainable, tiny_batch, tiny_method, tiny_sam, tiny_student

METHODS = {"lora": {"r": 4, "lora_alpha": 4}, "sam_adapter": {"first_block": 1}, "decoder_only": {}}


def student_for(method, seed=0):
    sam = tiny_sam(seed)
    attach_relation_module(sam)
    student = build_student(sam, method, METHODS[method])
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # trained weights that differ from the teacher's
        for param in student.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return student


def train_split(augment=(), random_crop=None, num_train=8):
    data_args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=num_train, synthetic_num_eval=2,
                              synthetic_num_test=2, synthetic_image_size=64, train_prompt="box",
                              augment=list(augment), random_crop=random_crop)
    return build_datasets(data_args, image_size=64, seed=0).train


def make_trainer(tmp_path, method, train, **options):
    args = InfoSAMConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, disable_tqdm=True,
                         per_device_train_batch_size=4, teacher_cache_dir=str(tmp_path / "cache"), **options)
    return InfoSAMTrainer(model=student_for(method), args=args, train_dataset=train)


def loss_and_grads(trainer, batch):
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_shared_prefix_length_per_tuner():
    assert shared_prefix_length(student_for("lora").get_base_model()) == 0  # LoRA touches block 0
    assert shared_prefix_length(student_for("sam_adapter").get_base_model()) == 1  # block 0 untouched
    assert shared_prefix_length(student_for("decoder_only").get_base_model()) == 3  # both blocks and the neck
    from transformers import SamConfig, SamModel

    with torch.device("meta"):  # ViT-B: the official SAM-Adapter layout leaves the embedding and blocks 0-1
        sam = SamModel(SamConfig())
        attach_relation_module(sam)
        assert shared_prefix_length(build_student(sam, "sam_adapter").get_base_model()) == 2


@pytest.mark.parametrize("method", list(METHODS))
def test_cache_and_prefix_sharing_change_no_loss_and_no_gradient(tmp_path, method):
    train = train_split()
    collate = SamPromptCollator()
    batches = [collate([train[i] for i in rows]) for rows in ([0, 1, 2, 3], [4, 5, 6, 7])]
    assert batches[0][INDEX_KEY] == [0, 1, 2, 3]
    reference = make_trainer(tmp_path / "ref", method, train, teacher_cache="off", share_frozen_prefix=False)
    fast = make_trainer(tmp_path / "fast", method, train, teacher_cache="on")
    assert fast.prefix_length == {"lora": 0, "sam_adapter": 1, "decoder_only": 3}[method]
    for epoch in range(2):  # epoch 0 fills the cache, epoch 1 reads it
        for batch in batches:
            loss_ref, grads_ref = loss_and_grads(reference, batch)
            loss_fast, grads_fast = loss_and_grads(fast, batch)
            assert torch.equal(loss_ref, loss_fast), (epoch, method)
            assert grads_ref.keys() == grads_fast.keys()
            for name in grads_ref:
                assert torch.equal(grads_ref[name], grads_fast[name]), (epoch, name)
    assert (fast.teacher_cache.misses, fast.teacher_cache.hits) == (2, 2)
    assert len(fast.teacher_cache) == 8
    # the teacher's features equal those of a plain full forward of the adapters-off SAM
    batch = reference._prepare_inputs(batches[1])
    inputs = {k: v for k, v in batch.items() if k in ("pixel_values", "input_boxes")}
    student = fast.model
    capture = SamFeatureCapture(student)
    with torch.no_grad(), student.disable_adapter(), capture.record() as full:
        student.eval()
        student(**inputs, multimask_output=False)
    features = fast.teacher_features(student, batch, batches[1][INDEX_KEY])
    assert torch.equal(features["image_embeds"], full["image_embeds"])
    assert torch.equal(features["mask_token"], full["mask_token"])


def test_cache_is_reused_across_runs_and_keyed_by_the_teacher(tmp_path):
    train = train_split()
    batch = SamPromptCollator()([train[i] for i in range(4)])
    first = make_trainer(tmp_path, "lora", train, teacher_cache="on")
    loss_and_grads(first, batch)
    second = make_trainer(tmp_path, "lora", train, teacher_cache="on")
    assert second.teacher_cache.directory == first.teacher_cache.directory
    loss_and_grads(second, batch)
    assert (second.teacher_cache.hits, second.teacher_cache.misses) == (1, 0)
    other_teacher = InfoSAMTrainer(model=student_for("lora", seed=3), args=second.args, train_dataset=train)
    assert other_teacher.teacher_cache.directory != first.teacher_cache.directory


def test_precompute_fills_the_cache_before_training(tmp_path):
    train = train_split()
    trainer = make_trainer(tmp_path, "lora", train, teacher_cache="on", teacher_cache_precompute=True, max_steps=2,
                           save_strategy="no")
    trainer.train()
    assert len(trainer.teacher_cache) == 8
    assert (trainer.teacher_cache.hits, trainer.teacher_cache.misses) == (2, 0)  # training only read it


def test_auto_turns_the_cache_off_for_pixel_changing_options_and_on_fails(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="infosam_hf.training.teacher_cache"):
        trainer = make_trainer(tmp_path, "lora", train_split(random_crop=[32, 32]), teacher_cache="auto")
    assert trainer.teacher_cache is None and "random_crop" in caplog.text
    with pytest.raises(ValueError, match="augment: hflip changes the pixels"):
        make_trainer(tmp_path, "lora", train_split(augment=["hflip"]), teacher_cache="on")
    assert make_trainer(tmp_path, "lora", train_split(), teacher_cache="auto").teacher_cache is not None


@pytest.mark.parametrize("cache", ["off", "on"])
def test_training_step_never_synchronises_with_the_host(tmp_path, monkeypatch, cache):
    train = train_split()
    batch = SamPromptCollator()([train[i] for i in range(4)])
    trainer = make_trainer(tmp_path, "sam_adapter", train, teacher_cache=cache)
    loss_and_grads(trainer, batch)  # with the cache: fills it, so the checked step reads it
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError("host sync")))
    loss, grads = loss_and_grads(trainer, batch)  # forward, teacher, information losses, guards, backward
    monkeypatch.undo()
    assert torch.isfinite(loss) and any("relation_module" in name for name in grads)
    if cache == "on":
        assert trainer.teacher_cache.hits == 1


@pytest.mark.parametrize("method", ["sam_adapter", "adaptformer", "conv_lora", "gsam_lora", "gsam_conv_lora", "bitfit",
                                    "decoder_only", "lora", "dora", "loha"])
def test_gradient_checkpointing_with_every_tuner_and_the_feature_hooks(tmp_path, method):
    train = train_split(num_train=4)
    batch = SamPromptCollator()([train[i] for i in range(4)])
    results = []
    for checkpointing in (False, True):
        student = tiny_method(method)
        perturb_trainable(student)
        args = InfoSAMConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, teacher_cache="off",
                             activation_checkpointing=checkpointing, per_device_train_batch_size=4)
        trainer = InfoSAMTrainer(model=student, args=args, train_dataset=train)
        if checkpointing:
            student.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        calls = []
        # a hook inside a checkpointed block sees the recomputation (hooks on the block itself stay outside it)
        student.get_base_model().vision_encoder.layers[-1].layer_norm1.register_forward_hook(
            lambda *a: calls.append(1))
        results.append((*loss_and_grads(trainer, batch), len(calls)))
    (loss, grads, calls), (loss_ckpt, grads_ckpt, calls_ckpt) = results
    if method != "decoder_only":  # (a frozen encoder has no backward to recompute for)
        assert calls_ckpt > calls, "no recomputation: checkpointing is not active"
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=0)
    assert grads.keys() == grads_ckpt.keys() and any("relation_module" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)


def test_sdpa_and_bf16_autocast_match_eager_float32(tmp_path):
    from infosam_hf.models.sam import load_sam

    train = train_split(num_train=4)
    batch = SamPromptCollator()([train[i] for i in range(4)])
    losses = {}
    for attention in ("eager", "sdpa"):
        sam = load_sam(sam_config=TINY_SAM, seed=0, attn_implementation=attention)
        assert type(sam.vision_encoder.layers[0].attn).__name__ == ("SamVisionSdpaAttention" if attention == "sdpa"
                                                                    else "SamVisionAttention")
        attach_relation_module(sam)
        student = build_student(sam, "lora", METHODS["lora"])
        args = InfoSAMConfig(output_dir=str(tmp_path / attention), report_to="none", use_cpu=True, teacher_cache="off")
        trainer = InfoSAMTrainer(model=student, args=args, train_dataset=train)
        losses[attention], _ = loss_and_grads(trainer, batch)
        if attention == "sdpa":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                losses["bf16"], _ = loss_and_grads(trainer, batch)
    torch.testing.assert_close(losses["sdpa"], losses["eager"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["bf16"], losses["eager"], rtol=3e-2, atol=1e-2)
    with pytest.raises(ValueError, match="attn_implementation"):
        load_sam(sam_config=TINY_SAM, attn_implementation="flash")


@pytest.mark.slow
def test_global_info_loss_batch_equals_one_process_on_the_whole_batch(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).resolve().parent / "global_batch_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp_path / "results.pt")
    args = InfoSAMConfig(output_dir=str(tmp_path / "single"), report_to="none", use_cpu=True, teacher_cache="off")
    single = InfoSAMTrainer(model=tiny_student(), args=args)
    loss, grads = loss_and_grads(single, tiny_batch(4, seed=0))
    reference = {"loss": loss, "loss_r": single._component_sums["loss_r"], "loss_d": single._component_sums["loss_d"]}
    distributed = results["global"]
    for key in reference:
        torch.testing.assert_close(distributed[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
    assert distributed["grads"].keys() == grads.keys() and any("relation_module" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(distributed["grads"][name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # per-process Grams (the default) are a different loss: the test can tell them apart
    assert not torch.allclose(results["local"]["loss_d"], reference["loss_d"], rtol=1e-3)


def test_gpu_benchmark_runs_end_to_end_on_the_cpu_with_tiny(monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_gpu

    results = bench_gpu.main(["--tiny", "--steps", "1", "--batch_size", "2"])
    assert set(results) == set(bench_gpu.VARIANTS)
    assert all(row["images/s"] > 0 for row in results.values())
    sys.modules.pop("bench_gpu", None)


def test_cache_key_follows_edited_image_files(tmp_path):
    from datasets import Dataset, Image
    from PIL import Image as PILImage

    from infosam_hf.data.transforms import SamSegmentationTransform
    from infosam_hf.training.teacher_cache import dataset_cache_key

    paths = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        PILImage.new("RGB", (8, 8), (i, 0, 0)).save(path)
        paths.append(str(path))
    transform = SamSegmentationTransform(64, train=True)
    for edit, dataset in enumerate((Dataset.from_dict({"image": paths}),
                                    Dataset.from_dict({"image": paths}).cast_column("image", Image()))):
        before = dataset_cache_key(dataset, transform)
        assert before["files"] is not None
        PILImage.new("RGB", (8, 8), (200, edit, 0)).save(paths[0])  # the file's content was edited
        assert dataset_cache_key(dataset, transform)["files"] != before["files"]
    assert dataset_cache_key(dataset, SamSegmentationTransform(32, train=True))["transform"] != before["transform"]


@pytest.mark.slow
def test_recipe_with_cache_on_and_an_augmentation_fails_before_loading_a_model(tmp_path):
    from pathlib import Path

    from infosam_hf.training.run import parse_train_args, run_training

    demo = str(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml")
    argv = [demo, "--output_dir", str(tmp_path / "run"), "--teacher_cache", "on", "--augment", "hflip,vflip"]
    with pytest.raises(ValueError, match="augment: hflip changes the pixels"):
        run_training(*parse_train_args(argv))
    assert not (tmp_path / "run").exists()
