"""Without the Hub: fail in seconds with one line, never print a log line twice, change nothing on disk."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image

from infosam_hf import remote
from infosam_hf.commands import evaluate, export, predict, push, train

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "recipes" / "demo.yaml")
TINY = ["--synthetic_num_train", "8", "--synthetic_num_eval", "4", "--synthetic_num_test", "4"]
LOGGERS = ("huggingface_hub.utils._http", "transformers.modeling_utils", "infosam_hf.models.sam")
FEW_SECONDS = 10.0  # the Hub check itself waits at most remote.HUB_TIMEOUT_S


@pytest.fixture
def hub_unreachable(monkeypatch):
    """The Hub at a closed local port, offline mode off: what a machine without network sees."""
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    remote.hub_unreachable_reason.cache_clear()
    yield
    remote.hub_unreachable_reason.cache_clear()


def _one_error_line(capfd, code):
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_hub_model_id_fails_fast_in_one_line(hub_unreachable, tmp_path, capfd, monkeypatch):
    import infosam_hf.training.validate as validate

    monkeypatch.setattr(validate, "select_splits", lambda *a, **k: pytest.fail("data loaded before the Hub check"))
    start = time.perf_counter()
    code = train.main([DEMO, "--model_name_or_path", "facebook/sam-vit-base", "--output_dir", str(tmp_path), *TINY])
    elapsed = time.perf_counter() - start
    line = _one_error_line(capfd, code)
    assert elapsed < FEW_SECONDS, elapsed
    assert "facebook/sam-vit-base" in line and "Hub is unreachable" in line and "local folder" in line


def test_missing_adapter_folder_says_no_such_folder(hub_unreachable, tmp_path, capfd):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    commands = {
        "predict": lambda name: predict.main(["--adapter", name, "--images", str(image), "--box", "1,1,20,20",
                                              "--out", str(tmp_path / "preds")]),
        "evaluate": lambda name: evaluate.main(["--adapter", name, "--recipe", DEMO, *TINY,
                                                "--output", str(tmp_path / "results.json")]),
        "export": lambda name: export.main([name, str(tmp_path / "merged")]),
    }
    for command, run in commands.items():
        for name in ("missing-run/leaf", "./missing-run/leaf"):  # a repo-id-shaped name, and a path
            start = time.perf_counter()
            code = run(name)
            elapsed = time.perf_counter() - start
            line = _one_error_line(capfd, code)
            assert f"adapter={name!r}: no such folder" in line, (command, line)
            assert elapsed < FEW_SECONDS, (command, elapsed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png"]


def _fake_adapter_dir(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "README.md").write_text("the run's own card\n")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_push_offline_is_one_line_and_changes_nothing(hub_unreachable, tmp_path, capfd):
    run_dir = tmp_path / "run"
    before = _fake_adapter_dir(run_dir)
    start = time.perf_counter()
    line = _one_error_line(capfd, push.main([str(run_dir), "someone/sam-demo"]))
    assert time.perf_counter() - start < FEW_SECONDS
    assert "Hub is unreachable" in line and "nothing in" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_push_that_fails_restores_the_card(tmp_path, monkeypatch, capfd):
    from infosam_hf.hub import push as hub_push

    class FailingApi:
        def create_repo(self, *args, **kwargs):
            raise ConnectionError("connection reset")

    run_dir = tmp_path / "run"
    before = _fake_adapter_dir(run_dir)
    monkeypatch.setattr(push, "hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(hub_push, "_default_api", lambda: FailingApi())
    line = _one_error_line(capfd, push.main([str(run_dir), "someone/sam-demo"]))
    assert "push to someone/sam-demo failed (ConnectionError: connection reset)" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_library_log_lines_print_once():
    code = ("import logging; from infosam_hf.commands.common import configure_logging; configure_logging(); "
            "configure_logging(); [logging.getLogger(n).warning('once-' + n) for n in "
            f"{LOGGERS!r}]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in LOGGERS:
        assert proc.stderr.count(f"once-{name}") == 1, proc.stderr


def test_relation_from_a_hub_id_fails_fast(hub_unreachable, tmp_path, capfd):
    start = time.perf_counter()
    code = train.main([DEMO, "--relation_from", "someone/leaf-run", "--output_dir", str(tmp_path), *TINY])
    line = _one_error_line(capfd, code)
    assert time.perf_counter() - start < FEW_SECONDS
    assert "relation_from='someone/leaf-run': no such folder" in line and "unreachable" in line
