"""Evaluation prompts are per example: scores do not depend on the evaluation batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infosam_hf.data import DataArguments, SamPromptCollator, select_splits, with_sam_transform
from infosam_hf.evaluation.loop import evaluate_segmentation, make_metrics, prompt_groups, sam_logits
from tests.testing_utils import blob_masks, pair_folder, tiny_data, tiny_student

EMPTY = (1, 4, 6)  # examples whose mask is empty, spread so that every batch size mixes them with others


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory):
    masks = blob_masks(9, seed=3)
    for k in EMPTY:
        masks[k] = np.zeros_like(masks[k])
    rng = np.random.default_rng(0)
    return pair_folder(tmp_path_factory.mktemp("eval"), masks,
                        image_fn=lambda mask: rng.integers(0, 255, mask.shape + (3,), dtype=np.uint8))


def _model(seed):
    """A tiny PEFT student with large random weights, so that any prompt difference shows in the scores."""
    model = tiny_student(seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return model


def _dataset(root, prompt, **options):
    args = DataArguments(dataset_name_or_path=str(root), test_split=None, validation_split_percentage=0,
                         eval_prompt=prompt, **options)
    return with_sam_transform(select_splits(args).train, args, image_size=64, train=False)


def _scores(model, dataset, batch_size):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=SamPromptCollator(0.5))
    with torch.no_grad():
        return evaluate_segmentation(lambda batch: sam_logits(model, batch), loader, make_metrics())


@pytest.mark.parametrize("prompt,options", [("box", {}), ("point", {}),
                                            ("points", {"prompt_fg_points": 2, "prompt_bg_points": 1})])
def test_scores_identical_at_batch_sizes_1_3_8(eval_folder, prompt, options):
    model = _model(1)
    dataset = _dataset(eval_folder, prompt, **options)
    assert sum(not dataset[k]["has_foreground"] for k in range(len(dataset))) == len(EMPTY)
    reference = _scores(model, dataset, 1)
    for batch_size in (3, 8):
        scores = _scores(model, dataset, batch_size)
        assert scores.keys() == reference.keys()
        for key, value in reference.items():
            assert scores[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (batch_size, key)


def test_box_batch_with_empty_masks_prompts_each_row_as_alone(eval_folder):
    model = _model(2)
    dataset = _dataset(eval_folder, "box")
    examples = [dataset[k] for k in range(6)]
    batch = SamPromptCollator()(examples)
    assert batch["point_prompted"].tolist() == [k in EMPTY for k in range(6)]
    groups = prompt_groups(batch)
    assert [(rows.tolist(), sorted(prompts)) for rows, prompts in groups] == [
        ([0, 2, 3, 5], ["input_boxes"]), ([1, 4], ["input_labels", "input_points"])]
    with torch.no_grad():
        together = sam_logits(model, batch)
        alone = torch.cat([sam_logits(model, SamPromptCollator()([ex])) for ex in examples])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # an empty example alone is prompted with its background point, a full one with its box
    assert "input_points" in SamPromptCollator()([examples[1]]) and "input_boxes" in SamPromptCollator()([examples[0]])


def test_training_batches_keep_one_prompt_kind():
    train = tiny_data().train
    examples = [dict(train[k]) for k in range(3)]
    examples[1]["has_foreground"] = False
    batch = SamPromptCollator()(examples)
    assert "point_prompted" not in batch and "input_boxes" not in batch and "input_points" in batch
