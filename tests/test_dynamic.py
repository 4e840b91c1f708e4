"""Any input size on SamModel (dynamic_input_size): equivalence, shapes, prompt geometry, PEFT, save/reload."""

import copy

import pytest
import torch
from peft import PeftModel

from infosam_hf.models.dynamic import DYNAMIC_CONFIG_KEY, enable_dynamic_input_size, is_dynamic_input_size
from infosam_hf.models.inference import load_for_inference
from infosam_hf.models.sam import load_sam
from infosam_hf.relation import attach_relation_module
from infosam_hf.tuners.registry import build_student
from tests.testing_utils import TINY_SAM, tiny_batch, tiny_sam


def _dynamic(seed=0):
    return enable_dynamic_input_size(tiny_sam(seed))


@pytest.mark.parametrize("prompt", ["box", "point", None])
def test_native_size_is_bit_identical_to_stock(prompt):
    stock = tiny_sam().eval()
    dynamic = enable_dynamic_input_size(copy.deepcopy(stock)).eval()
    batch = tiny_batch(2, 64, prompt=prompt or "box")
    if prompt is None:
        batch.pop("input_boxes")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        a = stock(multimask_output=False, **inputs)
        b = dynamic(multimask_output=False, **inputs)
    assert torch.equal(a.pred_masks, b.pred_masks)
    assert torch.equal(a.iou_scores, b.iou_scores)


@pytest.mark.parametrize("size", [(96, 160), (256, 384), (100, 70)])
def test_any_input_size_runs(size):
    model = _dynamic().eval()
    height, width = size
    boxes = torch.tensor([[[4.0, 4.0, width / 2, height / 2]]]).repeat(2, 1, 1)
    with torch.no_grad():
        out = model(pixel_values=torch.randn(2, 3, height, width), input_boxes=boxes, multimask_output=False)
        no_prompt = model(pixel_values=torch.randn(2, 3, height, width), multimask_output=False)
    # low-res logits: one per 2 input pixels for the tiny SAM (patch 8, 4x upscaling), padding cropped
    expected = (-(-height // 2), -(-width // 2))
    assert tuple(out.pred_masks.shape[-2:]) == expected
    assert tuple(no_prompt.pred_masks.shape[-2:]) == expected
    assert torch.isfinite(out.pred_masks).all()


def test_stock_model_rejects_other_sizes():
    with pytest.raises(ValueError, match="doesn't match"):
        tiny_sam()(pixel_values=torch.randn(1, 3, 96, 160), multimask_output=False)


def _corner_cells(height, width, patch=8):
    """Pixel centres of a few embedding cells of an H×W input: (row, col) and (x, y)."""
    grid_h, grid_w = height // patch, width // patch
    cells = [(0, 0), (grid_h - 1, grid_w - 1), (grid_h // 2, grid_w - 2), (1, grid_w // 3)]
    return [((i, j), ((j + 0.5) * patch - 0.5, (i + 0.5) * patch - 0.5)) for i, j in cells]


@pytest.mark.parametrize("size", [(96, 160), (160, 64)])
def test_box_corners_land_on_their_image_cells(size):
    """A prompt at pixel (x, y) is encoded like the image cell that contains it: on a non-square input
    the box selects the same place as on the square version of the image (the stock normalisation by
    the configured square size would misplace it)."""
    model = _dynamic().eval()
    height, width = size
    grid = (height // 8, width // 8)
    model._set_grid((height, width), grid)
    try:
        image_pe = model.get_image_wide_positional_embeddings()[0]  # (C, h, w)
        for (i, j), (x, y) in _corner_cells(height, width):
            box = torch.tensor([[[x, y, x, y]]])
            corners = model.prompt_encoder._embed_boxes(box)[0, 0]  # (2, C) with the corner embeddings added
            corners = corners - torch.stack([model.prompt_encoder.point_embed[2].weight[0],
                                             model.prompt_encoder.point_embed[3].weight[0]])
            torch.testing.assert_close(corners[0], image_pe[:, i, j], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(corners[1], image_pe[:, i, j], atol=1e-5, rtol=1e-5)
            points = model.prompt_encoder._embed_points(torch.tensor([[[[x, y]]]]), torch.ones(1, 1, 1), pad=False)
            torch.testing.assert_close(points[0, 0, 0] - model.prompt_encoder.point_embed[1].weight[0],
                                       image_pe[:, i, j], atol=1e-5, rtol=1e-5)
        # The configured square frame puts the far corner elsewhere: the check above can fail.
        model._set_grid(None, None)
        (i, j), (x, y) = _corner_cells(height, width)[1]
        stock = model.prompt_encoder._embed_points(torch.tensor([[[[x, y]]]]), torch.ones(1, 1, 1), pad=False)
        assert not torch.allclose(stock[0, 0, 0] - model.prompt_encoder.point_embed[1].weight[0],
                                  image_pe[:, i, j], atol=1e-3)
    finally:
        model._set_grid(None, None)


def test_square_and_stretched_inputs_agree_on_the_box():
    """The same scene at 64x64 and stretched to 64x128 (box stretched with it): the relative position of
    every prompt corner inside the image-wide encoding is the same, so the decoder's query sees the
    same cell."""
    model = _dynamic().eval()
    square_box = torch.tensor([[[8.0, 16.0, 40.0, 48.0]]])
    wide_box = square_box * torch.tensor([2.0, 1.0, 2.0, 1.0])
    wide_box[..., 0::2] += 0.5  # pixel centres: (x + 0.5) * 2 - 0.5
    model._set_grid((64, 128), (8, 16))
    wide = model.prompt_encoder._embed_boxes(wide_box)
    model._set_grid(None, None)
    square = model.prompt_encoder._embed_boxes(square_box)
    torch.testing.assert_close(wide, square, atol=1e-5, rtol=1e-5)


def test_lora_trains_on_crops_and_position_embedding_gets_gradients():
    sam = _dynamic()
    sam.vision_encoder.pos_embed.requires_grad_(True)
    attach_relation_module(sam)
    student = build_student(sam, "lora", {"r": 4, "lora_alpha": 4})
    out = student(pixel_values=torch.randn(2, 3, 48, 80), multimask_output=False)
    out.pred_masks.float().mean().backward()
    grads = [p.grad for n, p in student.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads)
    assert is_dynamic_input_size(student.get_base_model())


def test_option_survives_save_and_reload(tmp_path):
    sam = load_sam(sam_config=TINY_SAM, seed=0, dynamic_input_size=True)
    assert getattr(sam.config, DYNAMIC_CONFIG_KEY) is True
    sam.save_pretrained(tmp_path / "base")
    reloaded = load_sam(str(tmp_path / "base"))
    assert is_dynamic_input_size(reloaded)
    attach_relation_module(sam)
    student = build_student(sam, "lora", {"r": 4, "lora_alpha": 4})
    student.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    student.save_pretrained(tmp_path / "adapter")
    model = load_for_inference(str(tmp_path / "adapter"))
    assert isinstance(model, PeftModel) and is_dynamic_input_size(model.get_base_model())
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, 96, 160), multimask_output=False)
    assert tuple(out.pred_masks.shape[-2:]) == (48, 80)


MENU = ["sam_adapter", "adaptformer", "conv_lora", "gsam_lora", "gsam_conv_lora", "bitfit", "decoder_only", "lora",
        "loha"]


@pytest.mark.parametrize("method", MENU)
def test_every_peft_method_trains_on_non_square_crops(method):
    """Each method of the menu runs forward and backward on a 48x80 crop (a 6x10 token grid, not a multiple of
    the tiny SAM's 4x4 windows) and a 64x96 full image, and its trainable parameters get finite gradients."""
    sam = _dynamic()
    attach_relation_module(sam)
    student = build_student(sam, method, {"block_indices": [0, 1]} if method == "sam_adapter" else {})
    for height, width in ((48, 80), (64, 96)):
        student.zero_grad()
        boxes = torch.tensor([[[4.0, 4.0, width / 2, height / 2]]]).repeat(2, 1, 1)
        out = student(pixel_values=torch.randn(2, 3, height, width), input_boxes=boxes, multimask_output=False)
        assert tuple(out.pred_masks.shape[-2:]) == (height // 2, width // 2)
        out.pred_masks.float().square().mean().backward()
        trained = [(n, p) for n, p in student.named_parameters() if p.requires_grad and "relation_module" not in n]
        reached = [n for n, p in trained if p.grad is not None]
        assert reached, f"{method}: no gradient at {height}x{width}"
        assert all(torch.isfinite(p.grad).all() for _, p in trained if p.grad is not None)
        if method not in ("decoder_only",):  # the encoder-side adapter takes part too
            assert any("mask_decoder" not in n for n in reached), f"{method}: only the decoder learned"
