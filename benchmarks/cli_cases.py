"""The command lines whose start-up time matters: every ``--help`` and one typical usage error per command.

Shared by ``benchmarks/bench_cli.py`` (which times them) and ``tests/test_cli_speed.py`` (which checks that none of
them imports torch, transformers, peft, datasets or accelerate). ``workdir`` holds the files the cases name: an
image, a folder that is not an adapter; nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

HELP_CASES = [["--help"]] + [[name, "--help"] for name in
                             ("train", "evaluate", "predict", "export", "convert", "demo", "push", "download", "env")]
HELP_CASES.append(["train", "recipes/demo.yaml", "--help"])


def usage_error_cases(workdir: Path) -> dict[str, list[str]]:
    """One mistaken command line per command (each must exit 2 with one ``error:`` line), with its files."""
    workdir.mkdir(parents=True, exist_ok=True)
    image, not_adapter = workdir / "image.png", workdir / "not_an_adapter"
    Image.new("RGB", (64, 48)).save(image)
    not_adapter.mkdir(exist_ok=True)
    return {
        "train: a mistyped key": ["train", "recipes/demo.yaml", "--learnin_rate", "1e-4"],
        "evaluate: a mistyped key": ["evaluate", "--adapter", str(not_adapter), "--dataset_name_or_path", "synthetic",
                                     "--eval_prompot", "box"],
        "evaluate: a missing adapter": ["evaluate", "--adapter", str(workdir / "missing"), "--dataset_name_or_path",
                                        "synthetic"],
        "predict: a missing image": ["predict", "--adapter", str(not_adapter), "--images", str(workdir / "nope.png"),
                                     "--out", str(workdir / "out"), "--box", "1,1,9,9"],
        "predict: a box outside the image": ["predict", "--adapter", str(not_adapter), "--images", str(image),
                                             "--out", str(workdir / "out"), "--box", "100,100,120,120"],
        "export: not an adapter": ["export", str(not_adapter), str(workdir / "merged")],
        "convert: a missing checkpoint": ["convert", "sam", str(workdir / "sam_vit_b.pth"), str(workdir / "converted")],
        "push: not an adapter": ["push", str(not_adapter), "user/repo"],
        "download: an unknown set": ["download", "no_such_set"],
    }
