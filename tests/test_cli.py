import dataclasses
import os
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
    (["--eval_prompt", "mixd"], "eval_prompt='mixd' is not one of [box, point, points, mixed, none]; did you mean 'mixed'?"),
    (["--teacher_cache", "sometimes"], "teacher_cache='sometimes' is not one of [auto, off, on]"),
    (["--model_variant", "GSAM"], "model_variant='GSAM' is not one of [gsam, samus]; did you mean 'gsam'?"),
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


# ------------------------------------------------------------------------------ help and early errors
def _train(argv, capsys):
    from infosam_hf.commands.train import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_train_help_lists_every_key_by_group(flag, capsys):
    code, out, _ = _train([flag], capsys)
    assert code == 0 and out.startswith("usage: infosam train RECIPE.yaml")
    groups = [out.index(f"\n{name}:") for name in ("ModelArguments", "PeftArguments", "DataArguments", "InfoSAMConfig")]
    assert groups == sorted(groups)
    for dataclass_type in parse_train_args.__globals__["RECIPE_DATACLASSES"]:
        for field in dataclasses.fields(dataclass_type):
            if field.init and not field.name.startswith("_"):
                assert f"\n  --{field.name} " in out, field.name
    assert "--lambda_d float\n      Weight λ2 of loss_d (relation distillation). (default: 0.5)" in out
    assert "--logging_dir str | None" in out
    assert "--teacher_cache {auto,off,on}\n" in out and "--model_variant {gsam,samus} | None\n" in out  # the choices


def test_mode_keys_take_their_literal_choices(tmp_path):
    """A ``Literal`` key reads YAML's ``on`` as the word written and unsets an optional key with ``none``; a value
    outside the choices is the same one line from a recipe and from Python."""
    from infosam_hf.data import DataArguments

    recipe = tmp_path / "modes.yaml"
    recipe.write_text("teacher_cache: on\nvalidate_data: none\nmodel_variant: none\n")
    model_args, _, data_args, args = parse_train_args([str(recipe), "--output_dir", str(tmp_path / "out")])
    assert (args.teacher_cache, data_args.validate_data, model_args.model_variant) == ("on", "none", None)
    with pytest.raises(ValueError, match=r"^channel_order='RGB' is not one of \[rgb, bgr\]; did you mean 'rgb'\?$"):
        DataArguments(channel_order="RGB")


def test_train_help_after_a_recipe_shows_its_values(capsys):
    code, out, _ = _train([str(ROOT / "recipes" / "demo.yaml"), "--max_steps", "7", "--help"], capsys)
    assert code == 0
    assert "(default: -1; set to: 7)" in out and "(default: lora; set to: lora)" in out
    assert "set to: synthetic" in out


def test_train_without_arguments_prints_usage(capsys):
    code, out, err = _train([], capsys)
    assert code == 2 and err.startswith("usage: infosam train") and "--help" in err and "model_name_or_path" not in err


@pytest.mark.parametrize("script", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.py"))
                         + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("bench_*.py")))
def test_every_script_and_benchmark_answers_help(script, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", [str(ROOT / script), "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))  # benchmarks prepend the repository root
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None) and out.startswith("usage:"), out[:500]
    assert " ms" not in out  # the help only: nothing was timed or run


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    recipe = write(tmp_path, "learning_rate: 1e-3\npeft_config: {r: 4\nmax_steps: 3\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml:3:\d+: invalid YAML"):
        parse_train_args([recipe])


@pytest.mark.parametrize("extra, expected", [
    (["--peft_config.r", "x"], "peft_config.r: expected int, got 'x'"),
    (["--report_to", "surely_not_a_tracker"], "report_to='surely_not_a_tracker' is not known"),
    (["--per_device_train_batch_size", "-1"], "per_device_train_batch_size must be >= 1, got -1"),
    (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps must be >= 1"),
])
def test_option_errors_are_one_line_before_any_loading(tmp_path, capsys, monkeypatch, extra, expected):
    import infosam_hf.training.run as run
    import infosam_hf.training.validate as validate

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded data or a model before checking the options")

    monkeypatch.setattr(validate, "select_splits", no_loading)
    monkeypatch.setattr(run, "load_sam", no_loading)
    code, _, err = _train([str(ROOT / "recipes" / "demo.yaml"), "--output_dir", str(tmp_path), *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], err


def test_report_to_an_integration_that_is_not_installed(tmp_path, monkeypatch):
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard"])
    with pytest.raises(RecipeError, match=r"report_to='wandb': wandb is not installed \(pip install wandb\)"):
        parse_train_args(["--report_to", "wandb", "--output_dir", str(tmp_path)])


def test_cpu_runs_use_one_thread_unless_omp_num_threads_is_set(tmp_path, monkeypatch):
    import torch

    from infosam_hf.commands.train import cpu_threads

    *_, args = parse_train_args(["--output_dir", str(tmp_path), "--use_cpu", "true"])
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert cpu_threads(args) is None
        monkeypatch.delenv("OMP_NUM_THREADS")
        torch.set_num_threads(2)
        assert cpu_threads(args) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_carved_split_prints_no_flattening_bar(capfd):
    from infosam_hf.data import DataArguments, with_sam_transform
    from infosam_hf.data.synthetic import make_synthetic_split

    carved = make_synthetic_split(20, image_size=32).train_test_split(test_size=0.2, seed=0)["train"]
    with_sam_transform(carved, DataArguments(), 32, train=True)
    assert "Flattening" not in capfd.readouterr().err


def test_building_a_student_raises_no_deprecation_noise(recwarn):
    from infosam_hf.commands.common import configure_logging
    from infosam_hf.models.sam import load_sam
    from infosam_hf.relation import attach_relation_module
    from infosam_hf.tuners import build_student

    configure_logging()
    sam = load_sam(sam_config={"vision_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                 "image_size": 64, "patch_size": 16, "global_attn_indexes": [0]},
                               "mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 2}})
    attach_relation_module(sam)
    build_student(sam)
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]
