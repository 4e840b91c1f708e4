"""What keeps `--help` and usage errors instant: the stored recipe keys are current, and nothing heavy is imported
before a command knows it has work to do (timings live in benchmarks/bench_cli.py, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


import pytest

from infosam_hf.commands.train import TRAIN_KEYS_FILE
from infosam_hf.training.recipe import recipe_help_schema
from infosam_hf.training.run import RECIPE_DATACLASSES

ROOT = Path(__file__).resolve().parents[1]
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


def test_every_help_and_usage_error_of_the_benchmark_imports_no_heavy_package(tmp_path, monkeypatch):
    """The cases benchmarks/bench_cli.py times: each ``--help`` exits 0 and each usage error exits 2 with one
    ``error:`` line, without torch, transformers, peft, datasets or accelerate (what made them take seconds)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cli_cases import HELP_CASES, usage_error_cases
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.chdir(ROOT)
    cases = [(argv, 0) for argv in HELP_CASES] + [(argv, 2) for argv in usage_error_cases(tmp_path).values()]
    for argv, status in cases:
        code = (f"import contextlib, io\nfrom infosam_hf.commands.cli import main\nerr = io.StringIO()\n"
                f"with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
                f"    try:\n        code = main({argv!r})\n    except SystemExit as exit:\n        code = exit.code\n"
                f"assert code == {status}, (code, err.getvalue())\n"
                f"assert {status} == 0 or err.getvalue().count('error:') == 1, err.getvalue()")
        assert _heavy_modules_after(code) == [], argv


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

