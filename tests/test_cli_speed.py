"""What keeps `--help` and usage errors instant: the stored recipe keys are current, and nothing heavy is imported
before a command knows it has work to do (timings live in benchmarks/bench_cli.py, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infosam_hf.commands.train import TRAIN_KEYS_FILE
from infosam_hf.training.recipe import recipe_help_schema
from infosam_hf.training.run import RECIPE_DATACLASSES

HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate")


def test_stored_recipe_keys_match_the_argument_dataclasses():
    stored = json.loads(TRAIN_KEYS_FILE.read_text())
    assert stored == recipe_help_schema(RECIPE_DATACLASSES), (
        "infosam_hf/commands/train_keys.json is stale: run python -c 'from infosam_hf.commands.train import "
        "write_recipe_keys; write_recipe_keys()'")


def _heavy_modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    return [name for name in json.loads(out) if name in HEAVY]


def test_help_and_a_usage_error_import_no_heavy_package():
    assert _heavy_modules_after("import infosam_hf") == []
    help_run = "from infosam_hf.commands.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass"
    assert _heavy_modules_after(help_run) == []
    typo = "from infosam_hf.commands.cli import main\nassert main(['train', 'recipes/demo.yaml', '--learnin_rate', '1']) == 2"
    assert _heavy_modules_after(typo) == []


@pytest.mark.slow
def test_importing_peft_after_the_package_registers_the_sam_tuners():
    code = ("import infosam_hf\nfrom peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING as M\n"
            "assert 'SAM_ADAPTER' in M and 'ADAPTFORMER' in M, sorted(M)")
    subprocess.run([sys.executable, "-c", code], check=True)
    code_peft_first = ("from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING as M\nimport infosam_hf\n"
                       "assert 'SAM_ADAPTER' in M, sorted(M)")
    subprocess.run([sys.executable, "-c", code_peft_first], check=True)


def test_stored_command_help_matches_the_parsers():
    from infosam_hf.commands.cli import HELP_FILE, command_help

    stored = json.loads(HELP_FILE.read_text())
    assert stored == {name: command_help(name) for name in stored}, (
        "infosam_hf/commands/command_help.json is stale: run python -c 'from infosam_hf.commands.cli import "
        "write_command_help; write_command_help()'")
    assert set(stored) == {"evaluate", "predict", "export", "convert", "push", "download", "demo"}
