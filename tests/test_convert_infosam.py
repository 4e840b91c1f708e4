"""Official InfoSAM checkpoints -> sam_adapter adapter directories (infosam convert infosam)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from peft import AutoPeftModel

import infosam_hf  # noqa: F401  (registers sam_adapter with peft)
from infosam_hf.commands.cli import main as cli_main
from infosam_hf.convert import (
    convert_official_infosam,
    convert_original_sam,
    resolve_checkpoint_file,
    sam_from_original_state_dict,
)
from infosam_hf.relation import RelationModule, load_relation_state_dict
from tests.testing_utils import official_layout
from tests.testing_utils import tiny_batch

EMBED, HIDDEN = 32, 8  # tiny encoder width and the adapters' bottleneck (ratio 0.25)


def official_run(tmp_path, adapted=(1,), parallel=False, epoch=10):
    """A base SAM directory and an official run's files: ``<backend>_<epoch>_.pth`` with series adapters
    (Space_Adapter_Series / MLP_Adapter_Series, D_fc1 / D_fc2), retrained LayerNorms of the adapted blocks and
    decoder, optimizer and scheduler states, and ``relation_models/<epoch>.pth``."""
    g = torch.Generator().manual_seed(0)
    frozen = {key: torch.randn(shape, generator=g) * 0.2 for key, shape in official_layout().items()}
    torch.save(frozen, tmp_path / "sam_tiny.pth")
    convert_original_sam(tmp_path / "sam_tiny.pth", tmp_path / "base", decoder_num_heads=2)
    model = dict(frozen)
    for key in model:
        if key.startswith("mask_decoder.") or any(key.startswith(f"image_encoder.blocks.{b}.norm") for b in adapted):
            model[key] = frozen[key] + torch.randn(frozen[key].shape, generator=g) * 0.05
    kind = "Parallel" if parallel else "Series"
    for block in adapted:
        for where in ("Space", "MLP"):
            prefix = f"image_encoder.blocks.{block}.{where}_Adapter_{kind}."
            model[prefix + "D_fc1.weight"] = torch.randn(HIDDEN, EMBED, generator=g) * 0.2
            model[prefix + "D_fc1.bias"] = torch.randn(HIDDEN, generator=g) * 0.2
            model[prefix + "D_fc2.weight"] = torch.randn(EMBED, HIDDEN, generator=g) * 0.2
            model[prefix + "D_fc2.bias"] = torch.randn(EMBED, generator=g) * 0.2
    optimizer = {"state": {0: {"step": torch.tensor(40.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
                 "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                                   "amsgrad": False, "params": [0], "initial_lr": 2e-4}]}
    scheduler = {"T_max": 10, "eta_min": 2e-5, "base_lrs": [2e-4], "last_epoch": epoch, "_step_count": epoch + 1,
                 "_last_lr": [2e-5]}
    run = tmp_path / "run"
    (run / "relation_models").mkdir(parents=True)
    checkpoint = run / f"mutable_efficient_vit_b_{epoch}_.pth"
    torch.save({"model": model, "optimizer": optimizer, "lr_scheduler": scheduler, "epoch": epoch - 1}, checkpoint)
    relation = RelationModule(EMBED)
    with torch.no_grad():
        for param in relation.parameters():
            param.normal_(0, 0.1, generator=g)
    torch.save({"relation_model": relation.state_dict(), "relation_optimizer": optimizer,
                "relation_lr_scheduler": scheduler, "relation_epoch": epoch - 1}, run / "relation_models" / f"{epoch}.pth")
    return checkpoint, model, relation.state_dict()


def official_forward_model(model_state, adapted):
    """The official model, written directly: a SamModel with the checkpoint's SAM weights and, on each adapted
    block, ``y + D_fc2(gelu(D_fc1(y)))`` after the attention and after the MLP."""
    sam_part = {k: v for k, v in model_state.items() if "_Adapter_" not in k}
    sam = sam_from_original_state_dict(sam_part, decoder_num_heads=2)

    def adapter_hook(prefix):
        def hook(module, inputs, output):
            main = output[0] if isinstance(output, tuple) else output
            hidden = F.gelu(F.linear(main, model_state[prefix + "D_fc1.weight"], model_state[prefix + "D_fc1.bias"]))
            main = main + F.linear(hidden, model_state[prefix + "D_fc2.weight"], model_state[prefix + "D_fc2.bias"])
            return (main, *output[1:]) if isinstance(output, tuple) else main
        return hook

    for block in adapted:
        layer = sam.vision_encoder.layers[block]
        layer.attn.register_forward_hook(adapter_hook(f"image_encoder.blocks.{block}.Space_Adapter_Series."))
        layer.mlp.register_forward_hook(adapter_hook(f"image_encoder.blocks.{block}.MLP_Adapter_Series."))
    return sam.eval()


def outputs(model, batch):
    with torch.no_grad():
        box = model(pixel_values=batch["pixel_values"], input_boxes=batch["input_boxes"], multimask_output=False)
        point = model(pixel_values=batch["pixel_values"], input_points=torch.tensor([[[[10.0, 20.0]]]] * 2),
                      input_labels=torch.ones(2, 1, 1, dtype=torch.long), multimask_output=False)
    return box.pred_masks, point.pred_masks


@pytest.mark.parametrize("adapted", [(1,), (0, 1)])
def test_converted_adapter_predicts_as_the_official_model(tmp_path, adapted):
    checkpoint, model_state, relation_state = official_run(tmp_path, adapted)
    out = convert_official_infosam(checkpoint, tmp_path / "adapter", str(tmp_path / "base"))
    loaded = AutoPeftModel.from_pretrained(out).eval()
    config = loaded.peft_config["default"]
    assert config.peft_type == "SAM_ADAPTER" or "sam_adapter" in str(config.peft_type).lower()
    assert list(config.block_indices) == list(adapted) and config.adapter_ratio == HIDDEN / EMBED
    reference = official_forward_model(model_state, adapted)
    batch = tiny_batch(2)
    for ours, official in zip(outputs(loaded, batch), outputs(reference, batch)):
        torch.testing.assert_close(ours, official, rtol=0, atol=1e-6)
    relation = load_relation_state_dict(out)
    assert all(torch.equal(relation[k], relation_state[k]) for k in relation_state)  # found beside the checkpoint
    with loaded.disable_adapter():  # the teacher is the base SAM
        base = sam_from_original_state_dict(torch.load(tmp_path / "sam_tiny.pth", weights_only=True),
                                            decoder_num_heads=2)
        for ours, frozen in zip(outputs(loaded, batch), outputs(base.eval(), batch)):
            assert torch.equal(ours, frozen)


def test_command_line_with_explicit_relation(tmp_path, capsys):
    checkpoint, _, relation_state = official_run(tmp_path)
    moved = tmp_path / "elsewhere.pth"
    (checkpoint.parent / "relation_models" / "10.pth").rename(moved)
    code = cli_main(["convert", "infosam", str(checkpoint), str(tmp_path / "cli"), "--base", str(tmp_path / "base"),
                     "--relation", str(moved)])
    assert code == 0, capsys.readouterr().err
    assert "sam_adapter adapter saved to" in capsys.readouterr().out
    relation = load_relation_state_dict(tmp_path / "cli")
    from infosam_hf.models.inference import load_for_inference

    batch = tiny_batch(2)  # infosam evaluate / predict load it as AutoPeftModel does
    for a, b in zip(outputs(load_for_inference(str(tmp_path / "cli"), device="cpu"), batch),
                    outputs(AutoPeftModel.from_pretrained(tmp_path / "cli").eval(), batch)):
        assert torch.equal(a, b)
    assert all(torch.equal(relation[k], relation_state[k]) for k in relation_state)
    assert (tmp_path / "cli" / "preprocessor_config.json").is_file()


def test_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path, capsys):
    checkpoint, model_state, _ = official_run(tmp_path)
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    torch.save({"model": {k: v for k, v in model_state.items() if "_Adapter_" not in k}}, tmp_path / "plain_sam.pth")
    changed = dict(model_state)
    changed["image_encoder.blocks.0.attn.qkv.weight"] = changed["image_encoder.blocks.0.attn.qkv.weight"] + 0.01
    torch.save({"model": changed}, tmp_path / "other_base.pth")
    (tmp_path / "p").mkdir()
    parallel, _, _ = official_run(tmp_path / "p", parallel=True)
    capsys.readouterr()
    cases = {
        tmp_path / "notes.pth": "not a PyTorch checkpoint",
        tmp_path / "plain_sam.pth": "no Space_Adapter_Series",
        tmp_path / "other_base.pth": "frozen tensors differ from",
        parallel: "parallel adapter",
        tmp_path / "missing.pth": "no such checkpoint file",
    }
    for path, message in cases.items():
        code = cli_main(["convert", "infosam", str(path), str(tmp_path / "out"), "--base", str(tmp_path / "base")])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s]" not in line]  # progress bars
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
        assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="frozen tensors differ"):
        convert_official_infosam(tmp_path / "other_base.pth", tmp_path / "out", str(tmp_path / "base"))


def test_hub_paths_fail_fast_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(OSError, match=r"MuyaoYuan/InfoSAM/leaf/x_10_\.pth: cannot get it from the Hub"):
        resolve_checkpoint_file("hf://MuyaoYuan/InfoSAM/leaf/x_10_.pth")
    with pytest.raises(OSError, match="cannot get it from the Hub"):
        resolve_checkpoint_file("leaf/x_10_.pth", repo_id="MuyaoYuan/InfoSAM")
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="hf://OWNER/REPO/FILE"):
        resolve_checkpoint_file("hf://MuyaoYuan/InfoSAM")
