"""``infosam train RECIPE --dry_run`` rehearses every shipped recipe on a small random model, on the real data in
``../shared/data`` where it exists and on generated data of the same kind where it does not."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infosam_hf.commands.cli import main
from infosam_hf.training import parse_train_args
from infosam_hf.training.dry_run import shrink_size, tiny_config_for, wants_dry_run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# the recipes' dataset folder -> the copy of it in ../shared/data
SHARED_NAMES = {"data/leaf_disease_segmentation": "leaf_disease", "data/kvasir_seg": "kvasir_seg",
                "data/isbi2012": "isbi2012", "data/camvid": "camvid"}


ALL_RECIPES_ENV = "INFOSAM_DRY_RUN_ALL"


def shipped_recipes() -> list[Path]:
    """Every runnable recipe (``_*.yaml`` are fragments that others extend)."""
    found = list((ROOT / "recipes").glob("*.yaml")) + list((ROOT / "recipes" / "gsam").rglob("*.yaml"))
    return sorted(p for p in found if not p.name.startswith("_"))


def in_default_sweep(recipe: Path) -> bool:
    """The recipes every test run rehearses: all top-level ones, every G-SAM method on ISBI (and one InfoSAM
    twin), and GSAM on every G-SAM dataset. The other G-SAM cells differ from these only in keys these cover;
    ``INFOSAM_DRY_RUN_ALL=1`` rehearses them too (about 8 minutes here)."""
    relative = recipe.relative_to(ROOT / "recipes")
    if len(relative.parts) == 1:
        return True
    if len(relative.parts) == 2:  # recipes/gsam/<dataset>_gsam.yaml: the older names of the *_infosam cells
        return False
    dataset, name = relative.parts[1], relative.stem
    return (dataset == "isbi" and (not name.endswith("_infosam") or name == "gsam_infosam")) or name == "gsam"


def _generated_folder(root: Path, num_labels: int, value_map: dict | None, splits: set[str]) -> Path:
    """A small folder in the Conv-LoRA layout (images/, masks/, one ``<split>.csv`` per split the recipe names)
    with masks of the recipe's kind: 0/255 binary masks, class ids below ``num_labels``, or the raw values of
    ``mask_value_map``."""
    folder = root / f"labels{num_labels}_{'map' if value_map else 'ids'}_{'_'.join(sorted(splits))}"
    if folder.exists():
        return folder
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    values = sorted(value_map) if value_map else ([255] if num_labels == 1 else list(range(1, num_labels)))
    rows = []
    for index in range(8):
        image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), np.uint8)
        for offset, value in enumerate(values[:4]):
            top, left = 8 + 20 * offset, 10 + 24 * offset
            mask[top:top + 30, left:left + 40] = value
            image[top:top + 30, left:left + 40] = (200, 60 + 30 * offset, 40)
        Image.fromarray(image).save(folder / "images" / f"{index}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{index}.png")
        rows.append(f"images/{index}.png,masks/{index}.png")
    for split in splits:
        (folder / f"{split}.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    return folder


def _dataset_for(recipe: Path, root: Path) -> str:
    _, _, data, _ = parse_train_args([str(recipe), "--output_dir", str(root / "unused")])
    if data.dataset_name_or_path == "synthetic":
        return "synthetic"
    shared = SHARED_NAMES.get(data.dataset_name_or_path)
    if shared and (SHARED / shared).is_dir():
        return str(SHARED / shared)
    splits = {split for split in (data.train_split, data.eval_split, data.test_split) if split}
    return str(_generated_folder(root, data.num_labels, data.mask_value_map, splits))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", shipped_recipes(), ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_every_recipe_passes_its_dry_run(recipe, tmp_path_factory, capsys, monkeypatch):
    if not in_default_sweep(recipe) and not os.environ.get(ALL_RECIPES_ENV):
        pytest.skip(f"covered by the default sweep's keys; {ALL_RECIPES_ENV}=1 rehearses it too")
    root = tmp_path_factory.getbasetemp() / "dry_run_data"
    rehearsals = tmp_path_factory.mktemp("dry_run_out")
    monkeypatch.setattr(tempfile, "tempdir", str(rehearsals))  # the rehearsal's output folder (TMPDIR is cached)
    dataset = _dataset_for(recipe, root)
    assert main(["train", str(recipe), "--dataset_name_or_path", dataset, "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "Dry run passed" in out and "Adapter saved to" in out
    (folder,) = rehearsals.iterdir()  # the card and results stay to look at; the weights are gone
    kept = [p for p in folder.rglob("*") if p.is_file()]
    assert (folder / "README.md").is_file() and not [p for p in kept if p.suffix in (".safetensors", ".bin", ".pt")]
    assert sum(p.stat().st_size for p in kept) < 2**20


def test_dry_run_flag_forms():
    assert wants_dry_run(["r.yaml", "--dry_run"]) == (True, ["r.yaml"])
    assert wants_dry_run(["r.yaml", "--dry_run", "true", "--seed", "1"]) == (True, ["r.yaml", "--seed", "1"])
    assert wants_dry_run(["--dry_run=false", "r.yaml"]) == (False, ["r.yaml"])
    assert wants_dry_run(["r.yaml"]) == (False, ["r.yaml"])


def test_the_tiny_model_is_deep_enough_for_the_recipe_and_sizes_shrink():
    model, peft, _, _ = parse_train_args([str(ROOT / "recipes" / "leaf.yaml"), "--output_dir", "unused"])
    vision = tiny_config_for(model, peft, 128)["vision_config"]
    assert vision["num_hidden_layers"] == 12 and vision["global_attn_indexes"] == [2, 5, 8, 11]
    assert [shrink_size(s) for s in (1024, 512, 360, 256, 128)] == [128, 64, 64, 64, 64]
