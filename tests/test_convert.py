"""Original SAM checkpoints <-> HF SamModel (infosam convert sam)."""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
from transformers import AutoImageProcessor, SamConfig, SamModel

from infosam_hf.commands.cli import main as cli_main
from infosam_hf.models import load_sam
from infosam_hf.models.sam import set_decoder_layer_norm_eps
from infosam_hf.convert import (
    ORIGINAL_SAM_PRESETS,
    hf_to_original_state_dict,
    infer_sam_config,
    original_to_hf_state_dict,
    sam_from_original_state_dict,
)
from tests.testing_utils import official_layout, tiny_batch, tiny_sam


def random_tiny_sam(seed=0):
    model = tiny_sam(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every weight distinct and non-trivial, so a swapped key shows in the outputs
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return model.eval()


def predictions(model, batch):
    with torch.no_grad():
        box = model(pixel_values=batch["pixel_values"], input_boxes=batch["input_boxes"], multimask_output=True)
        points = model(pixel_values=batch["pixel_values"], input_points=torch.tensor([[[[10.0, 20.0], [40, 41]]]] * 2),
                       input_labels=torch.tensor([[[1, 0]]] * 2), multimask_output=False)
    return box.pred_masks, box.iou_scores, points.pred_masks


def test_hf_to_original_uses_the_official_names_shapes_and_values():
    model = random_tiny_sam()
    original = hf_to_original_state_dict(model.state_dict())
    assert {k: tuple(v.shape) for k, v in original.items()} == official_layout()
    # spot checks of what moves where, written independently of the mapping table
    assert torch.equal(original["mask_decoder.iou_prediction_head.layers.0.weight"],
                       model.mask_decoder.iou_prediction_head.proj_in.weight)
    assert torch.equal(original["mask_decoder.iou_prediction_head.layers.1.weight"],
                       model.mask_decoder.iou_prediction_head.layers[0].weight)
    assert torch.equal(original["mask_decoder.output_hypernetworks_mlps.2.layers.2.bias"],
                       model.mask_decoder.output_hypernetworks_mlps[2].proj_out.bias)
    assert torch.equal(original["image_encoder.neck.1.weight"], model.vision_encoder.neck.layer_norm1.weight)
    assert torch.equal(original["prompt_encoder.mask_downscaling.4.bias"],
                       model.prompt_encoder.mask_embed.layer_norm2.bias)
    assert torch.equal(original["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
                       model.shared_image_embedding.positional_embedding)
    assert torch.equal(original["image_encoder.blocks.1.attn.qkv.weight"], model.vision_encoder.layers[1].attn.qkv.weight)


def test_round_trip_is_the_identity_and_predicts_equally():
    model = random_tiny_sam()
    state = model.state_dict()
    back = original_to_hf_state_dict(hf_to_original_state_dict(state))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    converted = sam_from_original_state_dict(hf_to_original_state_dict(state), decoder_num_heads=2)
    assert converted.config.vision_config.global_attn_indexes == [1]
    assert converted.config.vision_config.window_size == 4
    set_decoder_layer_norm_eps(model, 1e-5)  # the converter keeps the original decoder's LayerNorm eps
    batch = tiny_batch(2)
    for a, b in zip(predictions(model, batch), predictions(converted, batch)):
        assert torch.equal(a, b)


def test_cli_converts_a_wrapped_ddp_checkpoint_that_model_name_or_path_loads(tmp_path, capsys):
    model = random_tiny_sam(seed=3)
    original = hf_to_original_state_dict(model.state_dict())
    original["pixel_mean"] = torch.tensor([100.0, 110.0, 120.0]).view(-1, 1, 1)  # non-persistent in segment_anything
    original["pixel_std"] = torch.tensor([50.0, 51.0, 52.0]).view(-1, 1, 1)
    path = tmp_path / "medsam_like.pth"
    torch.save({"model": {f"module.{k}": v for k, v in original.items()}, "epoch": 3}, path)
    out = tmp_path / "hf"
    assert cli_main(["convert", "sam", str(path), str(out), "--decoder_heads", "2"]) == 0
    assert "saved to" in capsys.readouterr().out
    loaded = load_sam(str(out))
    assert loaded.config.mask_decoder_config.layer_norm_eps == 1e-5
    set_decoder_layer_norm_eps(model, 1e-5)
    batch = tiny_batch(2, seed=5)
    for a, b in zip(predictions(model, batch), predictions(loaded, batch)):
        assert torch.equal(a, b)
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.size["longest_edge"] == 64 and processor.pad_size == {"height": 64, "width": 64}
    assert processor.image_mean == pytest.approx([100 / 255, 110 / 255, 120 / 255], abs=1e-6)


@pytest.mark.parametrize("model_type", list(ORIGINAL_SAM_PRESETS))
def test_released_architectures_are_inferred_from_shapes(model_type):
    embed, depth, heads, global_blocks = ORIGINAL_SAM_PRESETS[model_type]
    config = SamConfig(vision_config={"hidden_size": embed, "num_hidden_layers": depth, "num_attention_heads": heads,
                                      "global_attn_indexes": list(global_blocks), "mlp_dim": 4 * embed})
    with torch.device("meta"):
        reference = SamModel(config)
        original = hf_to_original_state_dict(reference.state_dict())
        converted = sam_from_original_state_dict(original, model_type="auto")
    vision = converted.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.window_size,
            vision.image_size, tuple(vision.global_attn_indexes)) == (embed, depth, heads, 14, 1024, global_blocks)
    assert sum(p.numel() for p in converted.parameters()) == sum(p.numel() for p in reference.parameters())
    infer_sam_config(original, model_type=model_type)
    other = next(name for name in ORIGINAL_SAM_PRESETS if name != model_type)
    with pytest.raises(ValueError, match=f"model_type={other} expects .* \\(a {model_type}\\)"):
        infer_sam_config(original, "sam.pth", model_type=other)


class NotATensor:
    pass


def _bad_checkpoints(tmp_path):
    good = hf_to_original_state_dict(random_tiny_sam().state_dict())
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    code, raw_pickle = tmp_path / "code.pth", tmp_path / "raw.pth"
    torch.save({"weights": NotATensor()}, code)
    with open(raw_pickle, "wb") as handle:
        pickle.dump({"weights": NotATensor()}, handle)
    missing = {k: v for k, v in good.items() if "neck.3" not in k and "layers.1.norm4" not in k}
    no_head = {k: v for k, v in good.items() if "iou_prediction_head" not in k}
    unexpected = dict(good, **{"image_encoder.blocks.0.adapter.weight": torch.zeros(2)})
    bad_shape = dict(good, **{"image_encoder.blocks.0.attn.qkv.weight": torch.zeros(95, 32)})
    bad_rel = dict(good, **{"image_encoder.blocks.0.attn.rel_pos_h": torch.zeros(6, 16)})
    cases = [(text, "not a PyTorch checkpoint"), (raw_pickle, "not a PyTorch checkpoint"),
             (code, r"refused: it pickles test_convert.NotATensor")]
    for name, state, message in [("missing", missing, r"missing 4 keys, e.g. \['image_encoder.neck.3.weight'"),
                                 ("no_head", no_head, r"missing key 'mask_decoder.iou_prediction_head.layers.0.weight'"),
                                 ("unexpected", unexpected, r"unexpected 1 keys, e.g. \['image_encoder.blocks.0.adapter"),
                                 ("shape", bad_shape, r"attn.qkv.weight has shape \(95, 32\).*needs \(96, 32\)"),
                                 ("rel", bad_rel, r"rel_pos_h has shape \(6, 16\), which fits no SAM")]:
        torch.save(state, tmp_path / f"{name}.pth")
        cases.append((tmp_path / f"{name}.pth", message))
    return cases


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_files_fail_with_one_line_and_write_nothing(tmp_path, capsys):
    for path, message in _bad_checkpoints(tmp_path):
        out = tmp_path / f"out_{path.stem}"
        assert cli_main(["convert", "sam", str(path), str(out), "--decoder_heads", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}"), err
        assert re.search(message, err), (message, err)
        assert not out.exists()


def test_converted_decoder_uses_the_original_layer_norm_eps():
    """segment_anything's TwoWayTransformer builds every LayerNorm as ``nn.LayerNorm(embedding_dim)`` (eps 1e-5);
    transformers' SAM configs say 1e-6. The converted model runs the original's: equal to a decoder whose
    LayerNorms are rebuilt the official way, within 1e-6, and different from the 1e-6 one."""
    model = random_tiny_sam(seed=4)
    converted = sam_from_original_state_dict(hf_to_original_state_dict(model.state_dict()), decoder_num_heads=2)
    assert converted.config.mask_decoder_config.layer_norm_eps == 1e-5
    official = copy.deepcopy(model)
    for parent in official.mask_decoder.transformer.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.LayerNorm):
                rebuilt = torch.nn.LayerNorm(child.normalized_shape[0])  # as the official code constructs it
                rebuilt.load_state_dict(child.state_dict())
                setattr(parent, name, rebuilt)
    batch = tiny_batch(2, seed=6)
    with torch.no_grad():  # small-variance tokens make eps matter
        for m in (converted, official, model):
            m.mask_decoder.mask_tokens.weight.mul_(1e-3)
            m.mask_decoder.iou_token.weight.mul_(1e-3)
    for ours, reference in zip(predictions(converted, batch), predictions(official, batch)):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    assert any(not torch.allclose(a, b, rtol=0, atol=1e-6)
               for a, b in zip(predictions(converted, batch), predictions(model, batch)))
