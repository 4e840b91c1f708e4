"""The documentation cannot drift: runnable blocks run, named keys and flags exist, the toctree lists every page,
and the CLI reference equals what the parsers generate."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infosam_hf.commands.cli import COMMANDS
from infosam_hf.training.run import RECIPE_DATACLASSES

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "source"
PAGES = sorted(SOURCE.glob("*.md"))
DOCS = [ROOT / "README.md", ROOT / "recipes" / "README.md", *PAGES]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
TRAIN_COMMAND = re.compile(r"(?:infosam train|scripts/train\.py)\b([^\n`|]*)")
OTHER_COMMAND = re.compile(r"\binfosam (evaluate|predict|export|convert|push|download|env)\b([^\n`|]*)")
FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w.-]*)")
INLINE_SETTING = re.compile(r"`([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)?): [^`]+`")
# named in prose as `key: value` but not recipe keys: a sam_config entry, the saved model config's class count,
# and the placeholder `key` itself (peft_config entries are checked against peft's config classes)
NESTED_KEYS = {"model_type", "infosam_num_classes", "key", "extends", "layer_norm_eps"}  # extends: the recipe parser's; layer_norm_eps: in sam_config
TRAIN_HELP_FLAGS = {"help", "h", "dry_run"}  # flags of `infosam train` itself, not recipe keys


def recipe_keys() -> set[str]:
    """Fields of the recipe dataclasses, and the options of every peft method (entries of ``peft_config``)."""
    import infosam_hf  # noqa: F401  (registers the SAM tuners with peft)
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    classes = [*RECIPE_DATACLASSES, *PEFT_TYPE_TO_CONFIG_MAPPING.values()]
    return {field.name for cls in classes for field in dataclasses.fields(cls)}


def command_flags(name: str) -> set[str]:
    parser = importlib.import_module(f"infosam_hf.commands.{name}").build_parser()
    parsers = [parser] + [sub for action in parser._actions
                          for sub in (getattr(action, "choices", None) or {}).values() if hasattr(sub, "_actions")]
    return {option.lstrip("-") for p in parsers for action in p._actions for option in action.option_strings}


def is_recipe_key(name: str, keys: set[str]) -> bool:
    return name.split(".")[0] in keys or name in NESTED_KEYS


def blocks(path: Path, info: str | None = None) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if info is None or lang.strip() == info]


def test_every_page_is_in_the_toctree_and_back():
    listed = re.findall(r"local:\s*(\S+)", (SOURCE / "_toctree.yml").read_text())
    assert len(listed) == len(set(listed)), "a page is listed twice in _toctree.yml"
    assert sorted(listed) == sorted(page.stem for page in PAGES)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_recipe_keys_exist(path):
    keys, text, unknown = recipe_keys(), path.read_text(), set()
    if path.name == "cli_reference.md":  # generated from the parsers themselves
        return
    for match in TRAIN_COMMAND.finditer(text):
        unknown |= {f"--{f}" for f in FLAG.findall(match.group(1).split("#")[0])
                    if f not in TRAIN_HELP_FLAGS and not is_recipe_key(f, keys)}
    for body in blocks(path, "yaml"):
        unknown |= {k for k in re.findall(r"^([A-Za-z_][\w.]*):", body, re.M) if not is_recipe_key(k, keys)}
    for table in re.findall(r"((?:^\|.*\n)+)", text, re.M):
        header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
        if header[0].lower() == "key":  # an option table: its first column names recipe keys
            for row in table.splitlines()[2:]:
                unknown |= {k for k in re.findall(r"^\|\s*`(\w+)`", row) if not is_recipe_key(k, keys)}
        elif re.fullmatch(r"`\w+`", header[0]):  # a table of one key's values
            unknown |= {header[0].strip("`")} - keys
    unknown |= {k for k in INLINE_SETTING.findall(text) if not is_recipe_key(k, keys)}
    assert not unknown, f"{path.name} names recipe keys that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_command_flags_exist(path):
    flags = {name: command_flags(name) for name in COMMANDS if name not in ("train", "env")}
    unknown = set()
    for command, rest in OTHER_COMMAND.findall(path.read_text()):
        named = {f for f in FLAG.findall(rest.split("#")[0])} - {"help", "h"}
        unknown |= {f"infosam {command} --{f}" for f in named if f not in flags.get(command, set())}
    assert not unknown, f"{path.name} names options that do not exist: {sorted(unknown)}"


@pytest.mark.slow
def test_cli_reference_is_generated_from_the_parsers():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "generate_cli_reference.py"), "--check"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr


def test_the_checks_catch_a_wrong_key_and_flag(tmp_path):
    page = tmp_path / "bad.md"
    page.write_text("`infosam train recipes/demo.yaml --lerning_rate 1` and `infosam predict --boxes 1,2,3,4`\n")
    with pytest.raises(AssertionError, match="lerning_rate"):
        test_named_recipe_keys_exist(page)
    with pytest.raises(AssertionError, match="--boxes"):
        test_named_command_flags_exist(page)


RUNNABLE = [(path, lang.split()[0], body) for path in DOCS for lang, body in FENCE.findall(path.read_text())
            if lang.strip() in ("python runnable", "bash runnable")]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """A folder holding ``outputs/demo``: a tiny LoRA adapter with its base in ``outputs/demo/base_model``."""
    from tests.testing_utils import student_on, tiny_sam

    folder = tmp_path_factory.mktemp("docs")
    demo = folder / "outputs" / "demo"
    student = student_on(tiny_sam(), "lora", {"r": 4, "lora_alpha": 4}, base_dir=demo / "base_model")
    student.save_pretrained(demo)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("path,lang,body", RUNNABLE,
                         ids=[f"{p.name}:{i}" for i, (p, _, _) in enumerate(RUNNABLE)])
def test_runnable_block(path, lang, body, demo_folder):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if lang == "python":
        command = [sys.executable, "-c", body]
    else:
        command = ["bash", "-e", "-c", f"infosam() {{ {sys.executable} -m infosam_hf \"$@\"; }}\n{body}"]
    result = subprocess.run(command, cwd=demo_folder, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"{path.name} block failed:\n{body}\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_loading_snippets_register_the_tuners(path):
    """Without ``import infosam_hf`` peft raises KeyError: 'SAM_ADAPTER' on a sam_adapter directory."""
    loading = [body for lang, body in FENCE.findall(path.read_text())
               if lang.startswith("python") and re.search(r"Peft\w*\.from_pretrained", body)]
    assert all("import infosam_hf" in body for body in loading), f"{path.name}: a loading snippet lacks the import"
