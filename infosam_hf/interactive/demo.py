"""The Gradio app of ``infosam demo``: click on an image, see the fine-tuned and the base model's masks side by side.

Imports Gradio (the ``demo`` extra); no ``from __future__ import annotations`` here, as Gradio reads the
``gr.SelectData`` annotation of the click handler at run time.
"""

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..evaluation.visualization import overlay_mask
from .session import Clicks, InteractiveSession

__all__ = ["MODES", "build_demo"]

MODES = ("foreground point", "background point", "box (two corners)")


def _clicks_of(state: list[tuple[float, float, str]]) -> Clicks:
    clicks = Clicks()
    corners = [(x, y) for x, y, mode in state if mode == MODES[2]]
    for x, y, mode in state:
        if mode != MODES[2]:
            clicks.points.append((x, y))
            clicks.labels.append(1 if mode == MODES[0] else 0)
    if len(corners) >= 2:
        (x0, y0), (x1, y1) = corners[-2:]
        clicks.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return clicks


def build_demo(session: InteractiveSession, samples: list | None = None, title: str = "InfoSAM adapter") -> gr.Blocks:
    """The ``gradio.Blocks`` app for ``session`` (``samples``: example image paths)."""
    mask_dir = Path(tempfile.mkdtemp(prefix="infosam_demo_"))

    def render(image: Any, state: list) -> tuple:
        if image is None:
            return None, None, None, "Upload or pick an image."
        session.set_image(image)
        clicks = _clicks_of(state)
        mask, base = session.predict_both(clicks)
        marks = {"box": clicks.box, "points": clicks.points or None, "point_labels": clicks.labels or None}
        tuned = overlay_mask(image, mask, **marks)
        base_view = overlay_mask(image, base, **marks) if base is not None else None
        path = mask_dir / f"mask_{len(state)}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        last = f"; last click at x={state[-1][0]:g}, y={state[-1][1]:g}" if state else ""
        status = f"{len(clicks.points)} point(s){', box' if clicks.box else ''}; foreground {mask.mean():.1%}{last}"
        return tuned, base_view, str(path), status

    def on_click(image, state, mode, evt: gr.SelectData):
        x, y = evt.index[0], evt.index[1]
        state = [*state, (float(x), float(y), mode)]
        return (state, *render(image, state))

    def on_undo(image, state):
        state = state[:-1]
        return (state, *render(image, state))

    def on_new_image(image):
        return ([], *render(image, []))

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}\nClick on the image to add a point (or two corners for a box). Left: the "
                    "fine-tuned model; right: the base model (the adapter disabled).")
        state = gr.State([])
        with gr.Row():
            image = gr.Image(label="image (click here)", type="numpy", elem_id="input-image", sources=["upload"])
            tuned = gr.Image(label="fine-tuned", elem_id="tuned-mask", interactive=False)
            base = gr.Image(label="base model", elem_id="base-mask", interactive=False)
        with gr.Row():
            mode = gr.Radio(list(MODES), value=MODES[0], label="click adds", elem_id="mode")
            undo = gr.Button("Undo", elem_id="undo")
            clear = gr.Button("Clear", elem_id="clear")
        status = gr.Markdown(elem_id="status")
        download = gr.File(label="mask (PNG)", elem_id="mask-file", interactive=False)
        if samples:
            gr.Examples(samples, inputs=image)
        outputs = [state, tuned, base, download, status]
        image.select(on_click, [image, state, mode], outputs)
        image.change(on_new_image, [image], outputs)
        undo.click(on_undo, [image, state], outputs)
        clear.click(on_new_image, [image], outputs)
    return demo
