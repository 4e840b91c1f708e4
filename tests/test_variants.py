"""The gsam and samus model variants: ViT-B counts, shapes, the ResNet key mapping, save/reload, InfoSAM training."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import ResNetConfig, SamConfig, SamModel
from transformers.models.resnet.modeling_resnet import ResNetStage

from infosam_hf.models.capture import match_teacher_grid
from infosam_hf.models.inference import load_for_inference
from infosam_hf.models.sam import load_sam
from infosam_hf.relation import attach_relation_module
from infosam_hf.training.recipe import RecipeError
from infosam_hf.training.run import parse_train_args, run_training
from infosam_hf.tuners.registry import build_student
from infosam_hf.tuners.variants import (GsamConfig, SamusConfig, active_variant, load_timm_resnet,
                                        timm_to_branch_key)
from infosam_hf.tuners.variants.resnet import ResNetBranch
from tests.testing_utils import TINY_SAM, perturb_trainable, reload_in_fresh_process, student_on

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "gsam"
SHARED = ROOT.parent / "shared" / "data"
# patch 16 as ViT-B, so tokens are at stride 8 and logits at H/2
TINY16 = {**TINY_SAM, "vision_config": {**TINY_SAM["vision_config"], "patch_size": 16}}
TINY_GSAM = {"resnet_depths": [1, 1, 1], "resnet_hidden_sizes": [16, 32, 64], "resnet_embedding_size": 8,
             "resnet_weights": None}
OPTIONS = {"gsam": TINY_GSAM, "samus": {}}


def tiny_variant(method, base_dir=None, seed=0, **options):
    return student_on(load_sam(sam_config=TINY16, seed=seed), method, {**OPTIONS[method], **options}, base_dir)


def perturb(model, seed=1):
    perturb_trainable(model, 0.05, seed)


def trainable(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "relation_module" not in n)


# ------------------------------------------------------------------------------------------- counts
@pytest.mark.parametrize("config, expected", [(GsamConfig(), 54.4e6), (SamusConfig(), 39.65e6)])
def test_vit_b_trainable_counts_on_meta(config, expected):
    with torch.device("meta"):
        model = get_peft_model(SamModel(SamConfig()), config)
    assert abs(trainable(model) - expected) <= 0.1e6, trainable(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("mask_decoder" in n for n in names) is (config.peft_name == "gsam")  # SAMUS keeps it frozen
    assert not any("patch_embed" in n or ".layers.0.attn.qkv" in n or "neck" in n for n in names)


def test_gsam_as_g_sam_codes_it_adds_resnet_layer4_and_fc():
    """71.4 M: G-SAM builds torchvision's whole ResNet-101, whose layer4 and fc are unused."""
    with torch.device("meta"):
        model = get_peft_model(SamModel(SamConfig()), GsamConfig())
        layer4 = ResNetStage(ResNetConfig(layer_type="bottleneck"), 1024, 2048, stride=2, depth=3)
    extra = sum(p.numel() for p in layer4.parameters()) + 2048 * 1000 + 1000
    assert abs(trainable(model) + extra - 71.4e6) <= 0.1e6


# ------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [(128, 128), (360, 480), (512, 1024)])
def test_gsam_takes_any_size_with_logits_at_half_resolution(size):
    model = tiny_variant("gsam").eval()
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, *size), multimask_output=False)
    assert tuple(out.pred_masks.shape) == (1, 1, 1, size[0] // 2, size[1] // 2)
    assert torch.isfinite(out.pred_masks).all()


def test_samus_at_256_and_disabled_adapters_are_the_base_sam():
    model = tiny_variant("samus").eval()
    base = load_sam(sam_config=TINY16, seed=0, dynamic_input_size=True).eval()
    pixels = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        assert tuple(model(pixel_values=pixels, multimask_output=False).pred_masks.shape) == (2, 1, 1, 128, 128)
        with model.disable_adapter():
            off = model(pixel_values=pixels, multimask_output=False).pred_masks
        assert torch.equal(off, base(pixel_values=pixels, multimask_output=False).pred_masks)
    assert active_variant(model) is not None


def test_gsam_pooled_attention_and_positional_encodings_are_used():
    """The PEG, the decoder's PosCNN and the global rel_pos copies all change the output (none is dead)."""
    model = tiny_variant("gsam").eval()
    pixels = torch.randn(1, 3, 96, 128)
    encoder = active_variant(model)
    with torch.no_grad():
        reference = model(pixel_values=pixels, multimask_output=False).pred_masks
        for param in (encoder.peg.weight, encoder.pos_cnn.weight, next(iter(encoder.rel_pos_h.values()))):
            saved = param.clone()
            param.add_(0.5)
            assert not torch.equal(model(pixel_values=pixels, multimask_output=False).pred_masks, reference)
            param.copy_(saved)
    assert next(iter(encoder.rel_pos_h.values())).shape[0] == 2 * 2 - 1  # base grid 4 -> resized to 2


def test_multiclass_head_and_box_prompts_on_gsam():
    sam = load_sam(sam_config=TINY16, seed=0, num_labels=3)
    attach_relation_module(sam)
    model = build_student(sam, "gsam", TINY_GSAM).eval()
    pixels = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        classes = model(pixel_values=pixels, multimask_output=True).pred_masks
        boxes = torch.tensor([[[10.0, 10.0, 60.0, 50.0]], [[0.0, 40.0, 127.0, 95.0]]])
        prompted = model(pixel_values=pixels, input_boxes=boxes, multimask_output=True).pred_masks
    assert tuple(classes.shape) == (2, 1, 3, 48, 64) and tuple(prompted.shape) == (2, 1, 3, 48, 64)
    assert not torch.equal(classes, prompted)


def test_gradients_reach_every_trainable_parameter():
    for method in ("gsam", "samus"):
        model = tiny_variant(method).train()
        out = model(pixel_values=torch.randn(2, 3, 64, 64), multimask_output=False)
        out.pred_masks.sum().backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None
                   and "relation_module" not in n and "iou_prediction_head" not in n]
        assert not missing, (method, missing)


# ------------------------------------------------------------------------------------------- ResNet weights
class _TorchvisionBottleneck(nn.Module):
    """torchvision's Bottleneck (stride on conv2), to check the key mapping against the real layout."""

    def __init__(self, in_ch, out_ch, stride):
        super().__init__()
        mid = out_ch // 4
        self.conv1, self.bn1 = nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
                           if stride != 1 or in_ch != out_ch else None)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class _TorchvisionResNet(nn.Module):
    def __init__(self, depths, widths, stem=8):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem)
        channels = stem
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = [_TorchvisionBottleneck(channels if j == 0 else width, width, 2 if (i and j == 0) else 1)
                      for j in range(depth)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            channels = width
        self.fc = nn.Linear(channels, 10)

    def features(self, x):  # stem without max-pool, layers 1-3
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


def test_timm_resnet_key_mapping_on_a_random_torchvision_layout():
    torch.manual_seed(0)
    reference = _TorchvisionResNet([2, 2, 2, 1], [16, 32, 64, 128]).eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):  # non-trivial running statistics
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    state = reference.state_dict()
    assert any(k.startswith("layer4.") for k in state) and "fc.weight" in state  # dropped by the mapping
    branch = ResNetBranch(32, depths=(2, 2, 2), hidden_sizes=(16, 32, 64), embedding_size=8).eval()
    load_timm_resnet(branch, state)
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = reference.features(pixels)
        got = branch.stages[2](branch.stages[1](branch.stages[0](branch.stem(pixels))))
    assert got.shape == expected.shape == (2, 64, 8, 6)
    torch.testing.assert_close(got, expected)
    assert timm_to_branch_key("layer3.22.downsample.1.running_var") is not None
    assert timm_to_branch_key("layer4.0.conv1.weight") is None
    with pytest.raises(ValueError, match="missing"):
        load_timm_resnet(branch, {k: v for k, v in state.items() if not k.startswith("layer2.")})
    with pytest.raises(ValueError, match="shape"):
        load_timm_resnet(branch, {**state, "conv1.weight": torch.zeros(8, 3, 3, 3)})


def test_missing_resnet_weights_fail_with_one_line(tmp_path):
    from infosam_hf.tuners.variants import download_timm_resnet

    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as constants
        previous, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
        with pytest.raises(OSError) as err:
            download_timm_resnet("nobody/not-a-resnet")
        assert "resnet_weights='nobody/not-a-resnet'" in str(err.value) and "\n" not in str(err.value)
    finally:
        constants.HF_HUB_OFFLINE = previous
        del os.environ["HF_HUB_OFFLINE"]


# ------------------------------------------------------------------------------------------- save and reload
@pytest.fixture(scope="module")
def saved_variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    batch = {"pixel_values": torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))}
    save_file(batch, str(root / "inputs.safetensors"))
    expected = {}
    for method in ("gsam", "samus"):
        model = tiny_variant(method, base_dir=root / method / "base")
        perturb(model)
        with torch.no_grad():
            model.train()(**batch, multimask_output=False)  # move the BatchNorm running statistics
            expected[method] = model.eval()(**batch, multimask_output=False).pred_masks
        model.save_pretrained(root / method / "adapter")
    return root, expected


@pytest.mark.slow
def test_auto_peft_model_reloads_both_variants_exactly(saved_variants):
    root, expected = saved_variants
    fresh_outputs = reload_in_fresh_process(root, ["gsam", "samus"])
    for method, masks in expected.items():
        assert torch.equal(fresh_outputs[method]["masks"], masks), method
        config = json.loads((root / method / "adapter" / "adapter_config.json").read_text())
        assert config["peft_type"] == method.upper()
    saved = load_file(str(root / "gsam" / "adapter" / "adapter_model.safetensors"))
    assert any("running_mean" in k for k in saved) and any("pos_cnn" in k for k in saved)
    assert not any("mask_decoder" in k for k in load_file(str(root / "samus" / "adapter" / "adapter_model.safetensors")))


# ------------------------------------------------------------------------------------------- InfoSAM
def test_student_embeddings_are_pooled_to_the_teacher_grid():
    embeds = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4 * 6, 3)
    student = {"image_embeds": embeds, "image_grid": (4, 6), "mask_token": torch.zeros(2, 1, 3)}
    for teacher in ({"image_embeds": torch.zeros(2, 6, 3), "image_grid": (2, 3)}, {"image_embeds": torch.zeros(2, 6, 3)}):
        pooled = match_teacher_grid(student, teacher)
        grid = embeds.reshape(2, 4, 6, 3)
        torch.testing.assert_close(pooled["image_embeds"][:, 0], grid[:, :2, :2].mean(dim=(1, 2)))
        assert pooled["image_embeds"].shape == (2, 6, 3)
    assert match_teacher_grid(student, {"image_embeds": embeds}) is student


def _variant_argv(recipe, out, method):
    options = json.dumps(OPTIONS[method])
    return [str(RECIPES / recipe), "--model_name_or_path", "null", "--sam_config", json.dumps(TINY16),
            "--peft_config", options, "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true",
            "--dataloader_num_workers", "0", "--save_total_limit", "1", "--output_dir", str(out),
            "--dataset_name_or_path", str(SHARED / "isbi2012"), "--max_steps", "2", "--max_eval_samples", "2",
            "--per_device_eval_batch_size", "2", "--per_device_train_batch_size", "2", "--eval_strategy", "no", "--load_best_model_at_end", "false",
            "--save_strategy", "no", "--logging_steps", "1"]


@pytest.mark.skipif(not (SHARED / "isbi2012").exists(), reason=f"{SHARED / 'isbi2012'} not present")
@pytest.mark.parametrize("recipe, method, extra", [("isbi_gsam.yaml", "gsam", []),
                                                   ("isbi_samus.yaml", "samus", ["--resize", "[128, 128]"]),
                                                   ("isbi_gsam.yaml", "gsam", ["--lambda_r", "0", "--lambda_d", "0"])])
def test_variants_train_with_infosam_on_isbi2012(recipe, method, extra, tmp_path, monkeypatch):
    from infosam_hf.relation import RelationModule

    grids = []  # token counts the relation module sees: teacher and student must match (student pooled)
    forward = RelationModule.forward

    def recording(self, image_embeds, mask_token):
        grids.append(image_embeds.shape[1])
        return forward(self, image_embeds, mask_token)

    monkeypatch.setattr(RelationModule, "forward", recording)
    out = tmp_path / method
    argv = _variant_argv(recipe, out, method) + extra
    results = run_training(*parse_train_args(argv))
    # samus: resized to 128, gsam: 128 crops; both teacher and student relations on the teacher's 8x8 grid
    assert set(grids) == ({(128 // 16) ** 2} if "--lambda_r" not in extra else set())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "loss" in entry]
    assert logged and all(math.isfinite(entry["loss"]) for entry in logged)
    info = not extra or "--lambda_r" not in extra
    assert all(("loss_d" in entry) is info for entry in logged)
    assert math.isfinite(results["test"]["test_loss"])
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["peft"]["peft_method"] == method and run_args["model"]["model_variant"] == method
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == method.upper()
    card = (out / "README.md").read_text()
    assert "import infosam_hf" in card and {"gsam": "GSAM (G-SAM's model)", "samus": "SAMUS"}[method] in card
    model = load_for_inference(str(out))  # the evaluate / predict route: base + adapter
    assert active_variant(model) is not None
    with torch.no_grad():
        assert model(pixel_values=torch.randn(1, 3, 96, 128), multimask_output=False).pred_masks.shape[-2:] == (48, 64)


def test_model_variant_refuses_another_peft_method(tmp_path):
    argv = _variant_argv("isbi_gsam.yaml", tmp_path, "gsam") + ["--peft_method", "bitfit"]
    with pytest.raises(RecipeError, match="model_variant='gsam' trains its own modules"):
        run_training(*parse_train_args(argv))


@pytest.mark.parametrize("name", ["camvid", "cityscapes", "isbi", "kvasir", "mbuilding", "synapse", "trans10k"])
def test_gsam_recipes_share_the_protocol_of_the_lora_recipes(name, tmp_path):
    lora = parse_train_args([str(RECIPES / name / "sam_lora.yaml"), "--output_dir", str(tmp_path)])
    gsam = parse_train_args([str(RECIPES / name / "gsam.yaml"), "--output_dir", str(tmp_path)])
    assert gsam[0].model_variant == "gsam" and lora[0].model_variant is None
    assert gsam[1].peft_config == {"resnet_weights": "timm/resnet101.tv_in1k", "train_peg": False}
    for key in ("resize", "random_crop"):  # GSAM takes G-SAM's dataset sizes, the baselines 1024x1024
        setattr(gsam[2], key, getattr(lora[2], key))
    assert gsam[2] == lora[2]  # data: augmentation, normalisation, mask rules
    assert gsam[3].to_dict() == lora[3].to_dict()  # training protocol (same output_dir given)


def test_build_models_gives_a_variant_a_base_sam_teacher_only_for_infosam(tmp_path):
    from infosam_hf.models import ModelArguments
    from infosam_hf.training.run import build_models
    from infosam_hf.tuners import PeftArguments

    model_args = ModelArguments(sam_config=TINY16, model_variant="gsam")
    peft_args = PeftArguments(peft_config=TINY_GSAM)
    student, teacher, _ = build_models(model_args, peft_args, str(tmp_path), seed=0)
    assert isinstance(teacher, SamModel) and active_variant(teacher) is None and active_variant(student) is not None
    pixels = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        with student.disable_adapter():
            expected = student.eval()(pixel_values=pixels, multimask_output=False).pred_masks
        assert torch.equal(teacher.eval()(pixel_values=pixels, multimask_output=False).pred_masks, expected)
    assert build_models(model_args, peft_args, str(tmp_path), seed=0, need_teacher=False)[1] is None


def test_model_variant_choices_are_the_variants():
    """``model_variant``'s Literal choices (checked when the recipe is read) name exactly the variants there are."""
    import typing

    from infosam_hf.choices import literal_choices
    from infosam_hf.models import ModelArguments
    from infosam_hf.tuners.variants import VARIANTS

    annotation = typing.get_type_hints(ModelArguments)["model_variant"]
    assert sorted(literal_choices(annotation)) == sorted(VARIANTS)
