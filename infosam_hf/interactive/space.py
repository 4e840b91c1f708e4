"""``infosam push OUTPUT_DIR --space DIR``: the files of a Hugging Face Space running the demo for an adapter."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

__all__ = ["SPACE_ADAPTER_DIR", "write_space"]

SPACE_ADAPTER_DIR = "adapter"
# what a Space needs from a run folder (the base_model/ copy only exists for a base without a Hub id)
_RUN_FILES = ("adapter_config.json", "adapter_model.safetensors", "run_args.json", "preprocessor_config.json",
              "README.md")

APP = '''"""Gradio Space: try the InfoSAM adapter in ./{adapter} click by click, beside its base model."""

from pathlib import Path

from infosam_hf.interactive.demo import build_demo
from infosam_hf.interactive.session import InteractiveSession
from infosam_hf.models.inference import load_for_inference

HERE = Path(__file__).resolve().parent
ADAPTER = str(HERE / "{adapter}")
SAMPLES = sorted(str(path) for path in (HERE / "{adapter}" / "samples").glob("*.png"))

demo = build_demo(InteractiveSession(load_for_inference(ADAPTER), ADAPTER), SAMPLES, title={title!r})

if __name__ == "__main__":
    demo.launch(allowed_paths=SAMPLES)
'''

README = """---
title: {title}
emoji: 🔬
colorFrom: indigo
colorTo: green
sdk: gradio
app_file: app.py
pinned: false
---

# {title}

Click on an image to segment it with the fine-tuned SAM adapter in `{adapter}/` and see the base model's mask
beside it. Made with `infosam push {run} --space DIR` (infosam-hf).
"""

REQUIREMENTS = "infosam-hf[demo]\ntorch\n"


def write_space(run_dir: str | Path, space_dir: str | Path, title: str | None = None) -> Path:
    """Write ``app.py``, ``requirements.txt``, ``README.md`` (Space front-matter) and the adapter to ``space_dir``.

    ``space_dir`` must not exist or be empty; it is built in a temporary folder beside it and renamed into place,
    so a failure leaves nothing half-written."""
    run_dir, space_dir = Path(run_dir), Path(space_dir)
    if space_dir.exists() and (not space_dir.is_dir() or any(space_dir.iterdir())):
        raise FileExistsError(f"--space {space_dir}: exists and is not empty; give a new folder")
    title = title or f"InfoSAM {run_dir.resolve().name}"
    space_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{space_dir.name}.", dir=space_dir.parent))
    try:
        adapter = staging / SPACE_ADAPTER_DIR
        adapter.mkdir()
        for name in _RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, adapter / name)
        if (run_dir / "base_model").is_dir():
            shutil.copytree(run_dir / "base_model", adapter / "base_model")
        samples = sorted((run_dir / "samples").glob("*.png"))[:8]
        if samples:
            (adapter / "samples").mkdir()
            for path in samples:
                shutil.copy2(path, adapter / "samples" / path.name)
        (staging / "app.py").write_text(APP.format(adapter=SPACE_ADAPTER_DIR, title=title))
        (staging / "requirements.txt").write_text(REQUIREMENTS)
        (staging / "README.md").write_text(README.format(title=title, adapter=SPACE_ADAPTER_DIR, run=run_dir))
        if space_dir.exists():
            space_dir.rmdir()
        staging.rename(space_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return space_dir
