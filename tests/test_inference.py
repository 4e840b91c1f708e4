import json
import shutil

import pytest
import torch

from infosam_hf.models.inference import BaseModelMismatchError, load_for_inference
from infosam_hf.training.run import parse_train_args, run_training
from tests.testing_utils import DEMO, FAST


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    run_training(*parse_train_args([DEMO, "--output_dir", str(out), "--max_steps", "1", "--eval_before_training",
                                    "false", "--test_split", "null", *FAST]))
    return out


def test_a_moved_run_still_loads_from_its_base_model_folder(trained, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(trained, moved)
    config_path = moved / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "/home/someone/outputs/demo/base_model"  # the machine it was trained on
    config_path.write_text(json.dumps(config))
    model = load_for_inference(str(moved))
    reference = load_for_inference(str(trained))
    pixels = torch.randn(1, 3, 128, 128)
    box = torch.tensor([[[20.0, 20.0, 90.0, 90.0]]])
    with torch.no_grad():
        a = model(pixel_values=pixels, input_boxes=box, multimask_output=False).pred_masks
        b = reference(pixel_values=pixels, input_boxes=box, multimask_output=False).pred_masks
    assert torch.equal(a, b)


def test_a_missing_base_without_a_local_copy_is_one_clear_error(trained, tmp_path):
    moved = tmp_path / "adapter_only"
    moved.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(trained / name, moved / name)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/home/someone/base_model"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match="is not on this machine"):
        load_for_inference(str(moved))


def test_a_different_base_is_refused(trained, tmp_path):
    other = tmp_path / "other_base"
    shutil.copytree(trained / "base_model", other)
    with pytest.raises(BaseModelMismatchError, match="was trained on base model"):
        load_for_inference(str(trained), base_model=str(other))
