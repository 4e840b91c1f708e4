import pytest
import torch

from infosam_hf.models import SamFeatureCapture
from infosam_hf.models.sam import build_sam_config, load_sam
from infosam_hf.relation import get_relation_module
from infosam_hf.tuners.registry import build_peft_config
from tests.testing_utils import (TINY_SAM, assert_adapter_off_is_the_base, captured_over_two_calls, tiny_batch, tiny_sam,
                      tiny_student)


def _forward(model, batch):
    return model(pixel_values=batch["pixel_values"], input_boxes=batch["input_boxes"], multimask_output=False)


def test_student_layout_matches_the_paper_defaults():
    student = tiny_student()
    config = student.peft_config["default"]
    assert config.r == 4 and config.lora_alpha == 4 and config.lora_dropout == 0.0
    assert set(config.modules_to_save) == {"mask_decoder", "relation_module"}
    lora_targets = {n.rsplit(".lora_A", 1)[0] for n, _ in student.named_parameters() if "lora_A" in n}
    assert lora_targets == {f"base_model.model.vision_encoder.layers.{i}.attn.qkv" for i in range(2)}
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert any("mask_decoder.modules_to_save" in n for n in trainable)
    assert any("relation_module.modules_to_save" in n for n in trainable)
    assert not any("original_module" in n or "base_layer" in n for n in trainable)


def test_unknown_peft_method_is_named():
    with pytest.raises(ValueError, match="peft_method='adapterx'.*available"):
        build_peft_config("adapterx")


def test_teacher_is_the_base_model_with_shared_weights():
    student = tiny_student(seed=0)
    base = tiny_sam(seed=0)  # the same random init, never wrapped
    batch = tiny_batch()
    assert_adapter_off_is_the_base(student, base, batch)

    frozen_ptrs = {p.data_ptr() for n, p in student.named_parameters() if not p.requires_grad}
    trained_ptrs = {p.data_ptr() for p in student.parameters() if p.requires_grad}
    used = []
    handles = [m.register_forward_pre_hook(lambda mod, args: used.extend(mod.parameters(recurse=False)))
               for m in student.modules()]
    with torch.no_grad(), student.disable_adapter():
        _forward(student, batch)
    for h in handles:
        h.remove()
    assert used, "the teacher pass used no parameters?"
    for param in used:
        assert param.data_ptr() in frozen_ptrs and param.data_ptr() not in trained_ptrs
    # no second copy of the base weights exists anywhere in the model
    base_numel = sum(p.numel() for p in base.parameters())
    frozen_numel = sum(p.numel() for n, p in student.named_parameters() if not p.requires_grad
                       and "relation_module" not in n)
    assert frozen_numel == base_numel


def test_capture_matches_a_manual_decoder_call():
    sam = tiny_sam(seed=3)
    batch = tiny_batch(batch_size=3, seed=3)
    feats = captured_over_two_calls(sam, batch, tiny_batch(batch_size=3, seed=4))  # the second must not overwrite
    with torch.no_grad():
        image_embeddings = sam.get_image_embeddings(batch["pixel_values"])
        sparse, dense = sam.prompt_encoder(input_points=None, input_labels=None,
                                           input_boxes=batch["input_boxes"], input_masks=None)
        decoder = sam.mask_decoder
        tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], 0).repeat(3, 1, 1, 1)
        tokens = torch.cat([tokens, sparse], dim=2)
        pos = sam.get_image_wide_positional_embeddings().repeat(3, 1, 1, 1)
        queries, _ = decoder.transformer(point_embeddings=tokens, image_embeddings=image_embeddings + dense,
                                         image_positional_embeddings=pos, attention_similarity=None)
    torch.testing.assert_close(feats["image_embeds"], image_embeddings.flatten(2).transpose(1, 2))
    torch.testing.assert_close(feats["mask_token"], queries[:, 0, 1:2, :])  # token 0 is the IoU token
    assert feats["image_embeds"].shape == (3, 64, 32) and feats["mask_token"].shape == (3, 1, 32)


def test_capture_under_activation_checkpointing_keeps_one_capture():
    from torch.utils.checkpoint import checkpoint

    student = tiny_student()
    student.train()
    capture = SamFeatureCapture(student)
    batch = tiny_batch()
    neck_calls = []
    neck = student.base_model.model.vision_encoder.neck
    neck.register_forward_hook(lambda *args: neck_calls.append(1))
    with capture.record() as feats:
        # checkpoint the whole forward: backward recomputes it, so every hook fires a second time
        out = checkpoint(lambda pixels: _forward(student, {**batch, "pixel_values": pixels}).pred_masks,
                         batch["pixel_values"], use_reentrant=False)
        first_embeds, first_token = feats["image_embeds"], feats["mask_token"]
        relation = get_relation_module(student)(first_embeds, first_token)
        (out.sum() + relation.sum()).backward()
    assert len(neck_calls) == 2, "the forward was not recomputed"
    assert feats["image_embeds"] is first_embeds and feats["mask_token"] is first_token
    assert any(p.grad is not None for n, p in student.named_parameters() if "lora_A" in n)


def test_model_loads_at_another_input_size(tmp_path):
    sam = tiny_sam(seed=1)
    sam.save_pretrained(tmp_path / "tiny")
    small = load_sam(str(tmp_path / "tiny"), image_size=32)
    assert small.config.vision_config.image_size == 32
    assert small.config.prompt_encoder_config.image_size == 32
    assert small.config.prompt_encoder_config.image_embedding_size == 4
    assert small.vision_encoder.pos_embed.shape == (1, 4, 4, 32)
    assert small.vision_encoder.layers[1].attn.rel_pos_h.shape[0] == 7  # global layer: 2*4-1
    assert small.vision_encoder.layers[0].attn.rel_pos_h.shape[0] == 7  # windowed: 2*window-1, unchanged
    assert torch.equal(small.vision_encoder.layers[0].attn.rel_pos_h, sam.vision_encoder.layers[0].attn.rel_pos_h)
    batch = tiny_batch(batch_size=2, size=32)
    with torch.no_grad():
        out = _forward(small, batch)
    assert out.pred_masks.shape == (2, 1, 1, 16, 16)
    same = load_sam(str(tmp_path / "tiny"), image_size=64)
    assert torch.equal(same.vision_encoder.pos_embed, sam.vision_encoder.pos_embed)


def test_missing_checkpoint_error_names_it(tmp_path):
    with pytest.raises(OSError, match="model_name_or_path="):
        load_sam(str(tmp_path / "nope"))


def test_inconsistent_config_is_rejected():
    with pytest.raises(ValueError, match="hidden sizes"):
        build_sam_config({"vision_config": {"output_channels": 16}, "mask_decoder_config": {"hidden_size": 32}})
    assert build_sam_config(TINY_SAM).vision_config.num_pos_feats == 16
