"""The PEFT menu: every method is a peft tuner that counts, trains, disables, saves and reloads exactly."""

import json
import re
import tomllib
from pathlib import Path

import peft
import peft.mapping
import pytest
import torch
from peft import PeftConfig
from safetensors.torch import save_file
from transformers import SamConfig, SamModel

import infosam_hf  # noqa: F401  (registers the tuners)
from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.relation import attach_relation_module
from infosam_hf.tuners import build_peft_config, build_student, parameter_groups, pop_auxiliary_loss
from infosam_hf.tuners.base import TESTED_PEFT
from infosam_hf.tuners.conv_lora import ConvLoraBranch
from tests.testing_utils import (
    METHODS, TINY_SAM, perturb_trainable, reload_in_fresh_process, tiny_batch, tiny_method, tiny_sam,
)

ROOT = Path(__file__).resolve().parents[1]
DECODER_VIT_B = 4_058_340

PREFIXES = {"sam_adapter": "sadapter_", "adaptformer": "adaptformer_", "conv_lora": "convlr_",
            "gsam_lora": "gslr_", "gsam_conv_lora": "gscvlr_", "bitfit": "bitfit_"}


def inputs(batch_size=2, seed=0):
    batch = tiny_batch(batch_size, seed=seed)
    return {"pixel_values": batch["pixel_values"], "input_boxes": batch["input_boxes"]}


def predict(model, batch):
    with torch.no_grad():
        out = model(**batch, multimask_output=False)
    return out.pred_masks, out.iou_scores


# ------------------------------------------------------------------------------------------- registration
def test_registration_route_and_pinned_peft_range(tmp_path):
    for name, prefix in PREFIXES.items():
        key = name.upper()
        assert peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING[key].peft_name == name, (
            f"peft {peft.__version__}: the registration route through peft.mapping broke for {name}")
        assert peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING[key].prefix == prefix
        assert peft.mapping.PEFT_TYPE_TO_PREFIX_MAPPING[key] == prefix
    prefixes = {k: v for k, v in peft.mapping.PEFT_TYPE_TO_PREFIX_MAPPING.items() if v}
    for name, prefix in PREFIXES.items():
        clashes = [other for other, p in prefixes.items() if other != name.upper() and (p in prefix or prefix in p)]
        assert not clashes, (name, clashes)
    config = build_peft_config("sam_adapter", {"adapter_init": "official"})
    config.save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert type(loaded) is type(config) and loaded.peft_type == "SAM_ADAPTER" and loaded.adapter_init == "official"
    pin = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
               if d.startswith("peft"))
    assert pin == f"peft{TESTED_PEFT}"
    low, high = re.fullmatch(r">=([\d.]+),<([\d.]+)", TESTED_PEFT).groups()
    version = tuple(int(x) for x in peft.__version__.split(".")[:2])
    assert tuple(int(x) for x in low.split(".")[:2]) <= version < tuple(int(x) for x in high.split(".")[:2])


def test_registry_errors_are_one_line():
    from infosam_hf.tuners import available_methods

    menu = available_methods()
    assert {"sam_adapter", "decoder_only", "lora", "loha", "lokr", "adalora", "ia3", "boft", "vera"} <= set(menu)
    assert "oft" not in menu and "prompt_tuning" not in menu
    with pytest.raises(ValueError, match="peft_method='nope' is not known"):
        build_peft_config("nope")
    with pytest.raises(ValueError, match="peft_config: .*unexpected keyword argument 'rr'"):
        build_peft_config("sam_adapter", {"rr": 4})
    with pytest.raises(ValueError, match="adapter_init="):
        build_peft_config("adaptformer", {"adapter_init": "gaussian"})
    with pytest.raises(ValueError, match="peft_method='oft'.*boft"):
        build_peft_config("oft")
    with pytest.raises(ValueError, match="^sam_adapter: the adapter cannot be merged"):
        tiny_method("sam_adapter").merge_and_unload()


# ------------------------------------------------------------------------------------------ ViT-B counts
@pytest.mark.parametrize("method", list(METHODS))
def test_vit_b_parameter_counts_on_meta(method):
    peft_method, options, adapter, norms = METHODS[method]
    options = {k: v for k, v in options.items() if k != "block_indices"}
    with torch.device("meta"):
        sam = SamModel(SamConfig())
        attach_relation_module(sam)
        student = build_student(sam, peft_method, options)
    groups = parameter_groups(student)
    assert groups == {"adapter": adapter, "decoder": DECODER_VIT_B, "LayerNorms": norms,
                      "relation module": groups["relation module"], "other": 0}
    assert groups["relation module"] > 0


def test_decoder_count_is_the_whole_mask_decoder_with_its_iou_head():
    with torch.device("meta"):
        decoder = SamModel(SamConfig()).mask_decoder
    parts = {name: sum(p.numel() for p in module.parameters()) for name, module in decoder.named_children()}
    assert sum(parts.values()) == DECODER_VIT_B and parts["iou_prediction_head"] == 132_612


# ------------------------------------------------------------------------------------ forward behaviour
@pytest.mark.parametrize("method", list(METHODS))
def test_disabled_adapter_is_exactly_the_base_model(method):
    batch = inputs()
    base_masks, base_scores = predict(tiny_sam().eval(), batch)
    student = tiny_method(method)
    perturb_trainable(student)
    student.eval()
    masks, _ = predict(student, batch)
    with student.disable_adapter():
        disabled_masks, disabled_scores = predict(student, batch)
    assert torch.equal(disabled_masks, base_masks) and torch.equal(disabled_scores, base_scores)
    if method != "decoder_only":
        assert not torch.equal(masks, base_masks)


@pytest.mark.parametrize("method", ["sam_adapter", "adaptformer"])
def test_zero_init_starts_at_sam_and_official_init_does_not(method):
    batch = inputs()
    base_masks, _ = predict(tiny_sam().eval(), batch)
    zero = tiny_method(method).eval()
    assert torch.equal(predict(zero, batch)[0], base_masks)
    peft_method, options, _, _ = METHODS[method]
    sam = tiny_sam()
    attach_relation_module(sam)
    official = build_student(sam, peft_method, {**options, "adapter_init": "official"}).eval()
    assert not torch.equal(predict(official, batch)[0], base_masks)


@pytest.mark.parametrize("method", list(METHODS))
def test_gradients_reach_only_the_intended_parameters(method):
    student = tiny_method(method)
    perturb_trainable(student)
    student.train()
    out = student(**inputs(), multimask_output=False)
    (out.pred_masks.square().mean() + out.iou_scores.mean()).backward()
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad <= trainable
    for name in trainable:
        assert ("modules_to_save" in name and ("mask_decoder" in name or "relation_module" in name)) or (
            "vision_encoder" in name), name
    adapter = {n for n in with_grad if "modules_to_save" not in n}
    assert bool(adapter) is (method != "decoder_only"), sorted(with_grad)
    if method in PREFIXES:
        assert all(PREFIXES[method] in n for n in adapter), sorted(adapter)
    if method == "sam_adapter":  # block 0 is not adapted: nothing of it trains, its norms stay the originals
        assert not any("vision_encoder.layers.0." in n for n in trainable)
        assert {n for n in adapter if "sadapter_norm" in n}
        assert not any(p.requires_grad for n, p in student.named_parameters()
                       if n.startswith("base_model.model.vision_encoder") and n.endswith("layer_norm1.weight"))


# ----------------------------------------------------------------------------------- save and reload
@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    """Every method saved beside its base; predictions of the trained-in-memory model kept for comparison."""
    root = tmp_path_factory.mktemp("saved")
    batch = inputs()
    save_file(batch, str(root / "inputs.safetensors"))
    expected = {}
    for method in METHODS:
        student = tiny_method(method, base_dir=root / method / "base")
        perturb_trainable(student)
        student.save_pretrained(root / method / "adapter")
        expected[method] = predict(student.eval(), batch)
    return root, expected


@pytest.mark.slow
def test_auto_peft_model_reloads_every_method_exactly_in_a_fresh_process(saved_runs):
    root, expected = saved_runs
    fresh_outputs = reload_in_fresh_process(root, list(METHODS))
    for method, (masks, scores) in expected.items():
        fresh = fresh_outputs[method]
        assert torch.equal(fresh["masks"], masks) and torch.equal(fresh["scores"], scores), method
    assert '"peft_type": "SAM_ADAPTER"' in (root / "sam_adapter" / "adapter" / "adapter_config.json").read_text()


# ------------------------------------------------------------------------------------------- training
def _train(method, tmp_path, steps=8, lr=1e-2):
    from infosam_hf.data import DataArguments, build_datasets

    data_args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=4, synthetic_num_eval=2,
                              synthetic_num_test=2, synthetic_image_size=64, train_prompt="box")
    splits = build_datasets(data_args, image_size=64, seed=0)
    args = InfoSAMConfig(output_dir=str(tmp_path / method), max_steps=steps, per_device_train_batch_size=4,
                         learning_rate=lr, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                         lambda_r=1.0, lambda_d=0.5, use_cpu=True, disable_tqdm=True, warmup_steps=0)
    trainer = InfoSAMTrainer(model=tiny_method(method), args=args, train_dataset=splits.train)
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("method", list(METHODS))
def test_short_infosam_training_decreases_the_loss(method, tmp_path):
    logs = _train(method, tmp_path)
    losses = [e["loss"] for e in logs]
    assert len(logs) == 8 and all(torch.isfinite(torch.tensor(losses)))
    # the information terms are noisy MI estimates; the structure loss falls step by step, the total on average
    assert logs[-1]["loss_seg"] < logs[0]["loss_seg"], [e["loss_seg"] for e in logs]
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert ("loss_aux" in logs[0]) is (method == "conv_lora")
    if method == "conv_lora":
        total = logs[0]["loss_seg"] + logs[0]["loss_r"] + 0.5 * logs[0]["loss_d"] + logs[0]["loss_aux"]
        assert logs[0]["loss"] == pytest.approx(total, abs=1e-3) and logs[0]["loss_aux"] >= 0


def test_conv_lora_reports_its_gate_loss_in_training_only():
    student = tiny_method("conv_lora")
    batch = inputs(batch_size=4)
    student.train()
    student(**batch, multimask_output=False)
    loss = pop_auxiliary_loss(student)
    assert loss is not None and loss.requires_grad and loss >= 0
    assert pop_auxiliary_loss(student) is None  # cleared
    student.eval()
    student(**batch, multimask_output=False)
    assert pop_auxiliary_loss(student) is None
    assert pop_auxiliary_loss(tiny_method("gsam_conv_lora")) is None


# ---------------------------------------------------------------------------------- token grids
GRID_VISION = {**TINY_SAM["vision_config"], "window_size": 14, "image_size": 224}  # 28x28 tokens, 2x2 windows


@pytest.mark.parametrize("method", ["conv_lora", "gsam_conv_lora"])
def test_conv_methods_follow_the_token_grid(method):
    """Windows of 14x14 (a 28x28 grid) and a global 16x24 grid: a change at one token moves the adapter's
    output only at that token's grid neighbours, so the bottleneck is laid out on the right (H, W)."""
    student = tiny_method(method, vision_config=GRID_VISION)
    perturb_trainable(student)
    student.eval()
    for module in student.modules():
        if isinstance(module, ConvLoraBranch):  # pin the gate's choice to the x4 bicubic expert
            module.route = lambda grid: (torch.full((grid.shape[0],), 3), grid.new_zeros(()))
    encoder = student.base_model.model.vision_encoder
    with torch.no_grad():
        pixels = torch.randn(1, 3, 224, 224)
        assert torch.isfinite(encoder(pixels).last_hidden_state).all()
        for layer, shape in ((encoder.layers[0], (4, 14, 14)), (encoder.layers[1], (1, 16, 24))):
            qkv = layer.attn.qkv
            tokens = torch.randn(*shape, qkv.base_layer.in_features)
            changed = tokens.clone()
            changed[0, 5, 7] += 1.0
            delta = qkv(changed) - qkv(tokens)
            with student.disable_adapter():
                base_delta = qkv(changed) - qkv(tokens)
            moved = ((delta - base_delta).abs().sum(-1) > 1e-6).nonzero().tolist()
            assert moved and [0, 6, 7] in moved and [0, 5, 8] in moved, moved
            assert all(b == 0 and abs(i - 5) <= 3 and abs(j - 7) <= 3 for b, i, j in moved), moved
            assert torch.isfinite(layer(torch.randn(*shape, qkv.base_layer.in_features))[0]).all()


# -------------------------------------------------------------------------------------------- recipes
def test_peft_method_on_the_command_line_drops_the_recipes_peft_config():
    from infosam_hf.training.run import parse_train_args

    demo = str(ROOT / "recipes" / "demo.yaml")
    _, peft_args, _, _ = parse_train_args([demo, "--peft_method", "sam_adapter"])
    assert peft_args.peft_method == "sam_adapter" and peft_args.peft_config == {}
    _, peft_args, _, _ = parse_train_args([demo, "--peft_method", "sam_adapter", "--peft_config.adapter_init",
                                           "official"])
    assert peft_args.peft_config == {"adapter_init": "official"}
    _, peft_args, _, _ = parse_train_args([demo, "--peft_config.r", "8"])
    assert peft_args.peft_method == "lora" and peft_args.peft_config["r"] == 8 and "modules_to_save" in peft_args.peft_config


@pytest.mark.parametrize("recipe", ["leaf", "kvasir", "isic", "camo", "road"])
def test_paper_recipes_train_the_papers_adapter(recipe):
    from infosam_hf.training.run import parse_train_args

    _, peft_args, _, _ = parse_train_args([str(ROOT / "recipes" / f"{recipe}.yaml")])
    config = build_peft_config(peft_args.peft_method, peft_args.peft_config)
    assert config.peft_type == "SAM_ADAPTER" and config.block_indices == list(range(2, 12))
    assert config.adapter_ratio == 0.25 and "mask_decoder" in config.modules_to_save


def test_lora_recipe_example_adapts_the_mask_decoders_attention_too():
    from infosam_hf.training.run import parse_train_args

    _, peft_args, _, _ = parse_train_args([str(ROOT / "recipes" / "leaf_lora_decoder.yaml")])
    with torch.device("meta"):
        sam = SamModel(SamConfig())
        attach_relation_module(sam)
        student = build_student(sam, peft_args.peft_method, peft_args.peft_config)
    adapted = {n.split(".lora_A")[0] for n, _ in student.named_parameters() if ".lora_A." in n}
    assert sum("vision_encoder" in n for n in adapted) == 12
    assert sum("mask_decoder" in n for n in adapted) == 7 * 4  # 7 attention blocks x q, k, v, out
    groups = parameter_groups(student)
    # r=4 LoRA: 8 self-attention projections 256->256, 20 cross-attention ones between 256 and 128 wide
    assert groups["adapter"] == 147_456 and groups["decoder"] == 8 * 4 * (256 + 256) + 20 * 4 * (256 + 128)


def test_demo_recipe_trains_conv_lora_from_the_command_line(tmp_path, capsys):
    from infosam_hf.training.run import parse_train_args, run_training

    out = tmp_path / "conv_lora"
    argv = [str(ROOT / "recipes" / "demo.yaml"), "--peft_method", "conv_lora", "--max_steps", "2",
            "--output_dir", str(out), "--eval_before_training", "false", "--synthetic_num_train", "8",
            "--synthetic_num_test", "4", "--per_device_train_batch_size", "4", "--logging_steps", "1"]
    run_training(*parse_train_args(argv))
    printed = capsys.readouterr().out
    assert re.search(r"Trainable parameters \(conv_lora\): [\d,]+ = adapter [\d,]+, decoder [\d,]+, LayerNorms 0, "
                     r"relation module [\d,]+, other 0", printed), printed
    assert '"peft_type": "CONV_LORA"' in (out / "adapter_config.json").read_text()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    train_logs = [h for h in history if "loss" in h]
    assert len(train_logs) == 2 and all(h["loss_aux"] >= 0 for h in train_logs)


def test_model_card_imports_infosam_hf_for_every_tuner(saved_runs):
    from infosam_hf import hub

    root, _ = saved_runs
    own = hub.build_model_card(root / "sam_adapter" / "adapter", None).text
    stock = hub.build_model_card(root / "lora" / "adapter", None).text
    # the project's tuners need the peft registration, every adapter its image processor's
    line = "import infosam_hf  # registers the SAM tuners with peft"
    assert line in own and line in stock
    assert "Adapter" in own
