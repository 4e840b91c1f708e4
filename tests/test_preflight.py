"""Model keys checked from the configuration alone, before anything is built: one ``error:`` line each."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from infosam_hf.commands.cli import main
from infosam_hf.errors import UsageError
from infosam_hf.models import ModelArguments
from infosam_hf.training import parse_train_args
from infosam_hf.models.preflight import activation_bytes, check_activation_memory, check_block_indices, vision_fields
from tests.testing_utils import TINY_SAM

LEAF = "recipes/leaf.yaml"


def _error_of(argv, capsys) -> str:
    start = time.perf_counter()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0] + f" ({time.perf_counter() - start:.1f}s)"


@pytest.mark.parametrize("word", ["none", "None", "null", ""])
def test_none_unsets_a_checkpoint_key(word):
    args = ModelArguments(model_name_or_path=word, teacher_model_name_or_path=word, relation_from=word,
                          sam_config=TINY_SAM)
    assert args.model_name_or_path is None and args.teacher_model_name_or_path is None and args.relation_from is None


def test_checkpoint_and_sam_config_together_are_refused(capsys, tmp_path):
    both = tmp_path / "both.yaml"
    both.write_text(Path(LEAF).read_text() + f"sam_config: {json.dumps(TINY_SAM)}\n")
    line = _error_of(["train", str(both), "--output_dir", str(tmp_path)], capsys)
    assert "model_name_or_path='facebook/sam-vit-base' and sam_config are both set" in line


def test_either_model_key_on_the_command_line_replaces_the_recipes_other(caplog):
    with caplog.at_level("WARNING"):
        model, *_ = parse_train_args([LEAF, "--sam_config", json.dumps(TINY_SAM)])
    assert model.model_name_or_path is None and model.sam_config == TINY_SAM
    assert "replaces the recipe's" in caplog.text and "model_name_or_path is not used" in caplog.text
    model, *_ = parse_train_args(["recipes/demo.yaml", "--model_name_or_path", "facebook/sam-vit-base"])
    assert model.model_name_or_path == "facebook/sam-vit-base" and model.sam_config is None


def test_block_indices_beyond_the_depth_fail_before_any_model_is_built(capsys, tmp_path):
    line = _error_of(["train", LEAF, "--model_name_or_path", "none", "--sam_config", json.dumps(TINY_SAM),
                      "--dataset_name_or_path", "synthetic", "--output_dir", str(tmp_path)], capsys)
    assert "block_indices" in line and "has 2 image-encoder blocks (0-1)" in line
    assert not (tmp_path / "base_model").exists()  # nothing was built or saved


def test_depth_is_read_from_known_names_local_configs_and_sam_config(tmp_path):
    assert vision_fields("facebook/sam-vit-huge", None)["num_hidden_layers"] == 32
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam", "vision_config": {"num_hidden_layers": 3}}))
    assert vision_fields(str(tmp_path), None)["num_hidden_layers"] == 3
    assert vision_fields(None, TINY_SAM)["patch_size"] == 8
    assert vision_fields("someone/unknown-sam", None) is None  # unknown without a download: not checked
    check_block_indices({"block_indices": [0, 1]}, vision_fields(None, TINY_SAM), "tiny")
    with pytest.raises(UsageError, match=r"block\(s\) \[2\]"):
        check_block_indices({"block_indices": [1, 2]}, vision_fields(None, TINY_SAM), "tiny")


@pytest.mark.slow
def test_an_input_size_the_machine_cannot_hold_is_refused_naming_image_size(capsys, tmp_path):
    vision = vision_fields(None, TINY_SAM)
    # attention maps grow with the fourth power of the side: 16x the pixels, 256x the global-attention maps
    assert activation_bytes(vision, 1024, 1) > 100 * activation_bytes(vision, 256, 1)
    check_activation_memory(vision, 64, 8, on_cpu=True, memory=2 ** 30)
    check_activation_memory(vision, 1024, 8, on_cpu=False, memory=2 ** 30)  # not checked off the CPU
    with pytest.raises(UsageError, match="image_size=1024"):
        check_activation_memory(vision, 1024, 8, on_cpu=True, memory=2 ** 34)
    line = _error_of(["train", "recipes/demo.yaml", "--image_size", "4096", "--output_dir", str(tmp_path)], capsys)
    assert line.startswith("error: image_size=4096") and "--dry_run" in line
