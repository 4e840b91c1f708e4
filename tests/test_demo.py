"""``infosam demo``: the click session behind it, and the page driven in a real headless Chromium."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from infosam_hf.interactive.session import Clicks, InteractiveSession
from tests.testing_utils import free_port, tiny_student

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _model():
    model = tiny_student(seed=0).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # an adapter that changes the masks, so base and fine-tuned differ
        for name, param in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=g) * 0.2)
    return model


def _image(seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (48, 80, 3), dtype=np.uint8)
    pixels[10:30, 20:50] = 200
    return Image.fromarray(pixels)


def test_session_encodes_once_and_shows_the_base_model():
    model = _model()
    session = InteractiveSession(model)
    image = _image()
    session.set_image(image)
    clicks = Clicks([(30.0, 20.0)], [1])
    tuned, base = session.predict_both(clicks)
    session.set_image(np.asarray(image))  # the same image again: no new encoder pass
    clicks.points.append((5.0, 5.0))
    clicks.labels.append(0)
    session.predict_both(clicks)
    assert session.encoder_runs == 1
    assert tuned.shape == (48, 80) and base.shape == (48, 80)
    with model.disable_adapter():  # base = the same weights with the adapter off, no second copy
        reference = InteractiveSession(model)
        reference.set_image(image)
        expected = reference.predict(Clicks([(30.0, 20.0)], [1]), "adapter")
    assert np.array_equal(base, expected) and not np.array_equal(tuned, base)


@pytest.mark.slow
@pytest.mark.browser
def test_demo_page_in_headless_chromium(tmp_path):
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    from infosam_hf.interactive.demo import build_demo

    session = InteractiveSession(_model())
    image_path = tmp_path / "cells.png"
    _image().save(image_path)
    port = free_port()
    app = build_demo(session)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    try:
        with sync_api.sync_playwright() as pw:
            # a fresh --user-data-dir: Playwright takes it as the persistent context's folder
            browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                            headless=True, args=args,
                                                            viewport={"width": 1280, "height": 900})
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            page.locator("#input-image input[type=file]").set_input_files(str(image_path))
            shown = page.locator("#input-image img").first
            shown.wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            box = shown.bounding_box()
            shown.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.4})
            page.locator("#tuned-mask img").first.wait_for(timeout=60_000)
            page.get_by_text("last click at").wait_for(timeout=60_000)
            status = page.locator("#status").inner_text()
            link = page.locator("#mask-file a").first
            link.wait_for(timeout=60_000)
            downloaded = page.request.get(link.get_attribute("href")).body()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            browser.close()
    finally:
        app.close()
    x, y = (float(v) for v in re.search(r"x=([\d.]+), y=([\d.]+)", status).groups())
    expected = session.predict(Clicks([(x, y)], [1]))
    mask = np.asarray(Image.open(io.BytesIO(downloaded))) > 127
    assert mask.shape == expected.shape == (48, 80)
    assert np.array_equal(mask, expected)
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_push_space_writes_a_runnable_space(tmp_path):
    import runpy

    import gradio as gr

    from infosam_hf.commands.push import main as push

    model = _model()
    run = tmp_path / "run"
    base = tmp_path / "base"
    model.get_base_model().save_pretrained(base)
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(run)
    (run / "samples").mkdir()
    _image().save(run / "samples" / "test_0.png")
    space = tmp_path / "space"
    assert push([str(run), "--space", str(space)]) == 0
    assert {p.name for p in space.iterdir()} == {"app.py", "requirements.txt", "README.md", "adapter"}
    readme = (space / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: gradio" in readme and "app_file: app.py" in readme
    assert "infosam-hf[demo]" in (space / "requirements.txt").read_text()
    app = runpy.run_path(str(space / "app.py"), run_name="space_app")  # builds the demo, does not launch
    assert isinstance(app["demo"], gr.Blocks) and len(app["SAMPLES"]) == 1
    assert push([str(run), "--space", str(space)]) == 2  # never overwrites a folder
    assert push([str(run)]) == 2  # no repo id and no --space
