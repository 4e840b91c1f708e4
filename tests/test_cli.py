import subprocess
import sys
from pathlib import Path

import pytest

from infosam_hf.training.recipe import RecipeError
from infosam_hf.training.run import parse_train_args

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_values_are_coerced_and_cli_overrides_win(tmp_path):
    recipe = write(tmp_path, "learning_rate: 2e-4\nnum_train_epochs: 10\nlambda_d: 0.5\n"
                             "peft_config: {r: 4, lora_alpha: 4}\noutput_dir: out\n")
    model, peft, data, args = parse_train_args([recipe, "--lambda_d", "0.25", "--peft_config.r", "16",
                                                "--eval_prompt=points", "--bf16", "false", "--augment", "hflip,vflip"])
    assert args.learning_rate == pytest.approx(2e-4) and isinstance(args.learning_rate, float)
    assert args.num_train_epochs == 10 and args.lambda_d == 0.25 and args.bf16 is False
    assert peft.peft_config == {"r": 16, "lora_alpha": 4}
    assert data.eval_prompt == "points" and data.augment == ["hflip", "vflip"]
    assert args.remove_unused_columns is False and args.ddp_find_unused_parameters is False
    assert args.label_names == ["labels"]


def test_bare_boolean_flag(tmp_path):
    *_, args = parse_train_args(["--output_dir", str(tmp_path), "--eval_before_training"])
    assert args.eval_before_training is True


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key 'lamda_r'; did you mean lambda_r"):
        parse_train_args([write(tmp_path, "lamda_r: 1\n")])
    with pytest.raises(RecipeError, match="unknown key 'learning_rat'"):
        parse_train_args(["--learning_rat", "1e-3"])


def test_bad_type_names_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"^max_steps: expected int, got 'ten'"):
        parse_train_args(["--max_steps", "ten"])
    with pytest.raises(RecipeError, match=r"^lambda_r: expected float"):
        parse_train_args([write(tmp_path, "lambda_r: [1, 2]\n")])


def test_invalid_values_and_files_are_one_line_errors(tmp_path):
    with pytest.raises(RecipeError, match="structure_loss_bce"):
        parse_train_args(["--structure_loss_bce", "focal", "--output_dir", str(tmp_path)])
    with pytest.raises(RecipeError, match="recipe file not found"):
        parse_train_args([str(tmp_path / "missing.yaml")])


def test_script_prints_one_line_error_and_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), str(ROOT / "recipes" / "demo.yaml"),
                           "--lerning_rate", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown key 'lerning_rate'; did you mean learning_rate")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_every_shipped_recipe_parses():
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        parse_train_args([str(recipe)])


def test_strategy_no_and_null_survive_parsing(tmp_path):
    recipe = write(tmp_path, "save_strategy: no\neval_strategy: \"no\"\noutput_dir: out\n")
    _, _, data, args = parse_train_args([recipe, "--logging_strategy", "no", "--test_split", "null"])
    assert args.save_strategy == "no" and args.eval_strategy == "no" and args.logging_strategy == "no"
    assert data.test_split is None


@pytest.mark.parametrize("extra, expected", [
    (["--eval_prompt", "mixd"], "eval_prompt='mixd' is not one of"),
    (["--peft_method", "adapterx"], "peft_method='adapterx' is not known"),
    (["--peft_config.rr", "3"], "peft_config:"),
    (["--relation_from", "/nonexistent/relation_models/3.pth"], "relation_from=/nonexistent/relation_models/3.pth"),
    (["--model_name_or_path", "/nonexistent/sam"], "model_name_or_path='/nonexistent/sam'"),
    (["--augment", "hflip,warp"], "warp"),
])
def test_bad_options_fail_with_one_line(tmp_path, capsys, extra, expected):
    from infosam_hf.commands.train import main

    code = main([str(ROOT / "recipes" / "demo.yaml"), "--output_dir", str(tmp_path), "--synthetic_num_train", "8",
                 "--synthetic_num_test", "4", "--synthetic_num_eval", "4", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
