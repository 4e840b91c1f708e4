"""A finished run is a PEFT adapter repo: model card, exact reload, export, push (mocked) and relation reuse."""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects
from peft import AutoPeftModel, PeftModel
from safetensors.torch import load_file, save_file
from transformers import SamModel

import infosam_hf.hub as hub
import infosam_hf.hub.push as hub_push
from infosam_hf.commands import push as push_command
from infosam_hf.commands.push import main as push_main
import infosam_hf.training.run as pipeline
from infosam_hf import InfoSAMTrainer
from infosam_hf.data import build_datasets
from infosam_hf.models.merge import export_merged
from infosam_hf.commands.export import main as export_main
from infosam_hf.relation import get_relation_module, load_relation_state_dict, relation_state_from_adapter_weights
from infosam_hf.training.run import build_models, parse_train_args, run_training
from tests.testing_utils import DEMO, FAST
from tests.testing_utils import tiny_batch

ROOT = Path(__file__).resolve().parents[1]
QUICK = [*FAST, "--disable_tqdm", "true", "--metric_set", "paper"]
METRICS = ("iou", "dice", "iou@0.5", "dice@0.5", "s_measure", "e_measure", "weighted_f_measure", "mae", "miou")
SECRET = "hf_infosamTestSecretToken0123456789"


def recording_trainer(trainers):
    class Recording(InfoSAMTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    return Recording


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One demo run (3 steps): its output_dir, the in-memory trained model and the returned results."""
    out = tmp_path_factory.mktemp("hub") / "demo"
    trainers = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "InfoSAMTrainer", recording_trainer(trainers))
        results = run_training(*parse_train_args([DEMO, "--output_dir", str(out), "--max_steps", "3", *QUICK]))
    model = trainers[0].model.eval()
    return SimpleNamespace(out=out, model=model, results=results)


def trained_relation(model):
    """The relation module's trained copy (get_relation_module gives PEFT's ModulesToSaveWrapper)."""
    module = get_relation_module(model)
    return module.modules_to_save["default"] if hasattr(module, "modules_to_save") else module


def predict(model, batch):
    with torch.no_grad():
        outputs = model(pixel_values=batch["pixel_values"], input_boxes=batch["input_boxes"], multimask_output=False)
    return outputs.pred_masks, outputs.iou_scores


def sample_batch():
    return tiny_batch(batch_size=2, size=128, seed=3)


# ---------------------------------------------------------------------------------- the directory
def test_output_dir_is_an_adapter_repo_with_our_model_card(run):
    out = run.out
    for name in ("adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json", "README.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base_model"  # relative to the adapter folder: it can move
    weights = load_file(str(out / "adapter_model.safetensors"))
    for part in ("lora_A", "lora_B", "mask_decoder", "relation_module"):
        assert any(part in key for key in weights), part
    assert "token" not in json.dumps(json.loads((out / "run_args.json").read_text())["training"]).lower().replace(
        "num_input_tokens_seen", "").replace("average_tokens_across_devices", "")

    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.library_name == "peft" and data.pipeline_tag == "mask-generation"
    assert {"infosam", "segment-anything", "peft", "image-segmentation"} <= set(data.tags)
    assert data.datasets == ["synthetic"]
    assert data.base_model is None  # a local, config-built base is not a Hub id
    test_results = json.loads((out / "test_results.json").read_text())
    recorded = {res.metric_type: res.metric_value for res in data.eval_results}
    assert set(METRICS) <= set(recorded)
    assert recorded == {k.removeprefix("test_"): v for k, v in test_results.items()
                        if k.removeprefix("test_") in recorded}
    assert all(res.dataset_split == "test" for res in data.eval_results)
    text = card.text
    for needle in ("lambda_r", "lambda_d", "train_prompt", "eval_prompt", "prompt_point_prob", "image_size",
                   "PeftModel.from_pretrained", 'subfolder="base_model"', "import infosam_hf  # registers",
                   "@inproceedings", "ICML",
                   "InfoSAM: Fine-Tuning the Segment Anything Model from An Information-Theoretic Perspective",
                   "before training", "box-fill baseline"):
        assert needle in text, needle


def test_card_records_a_hub_base_model_and_the_repo_in_the_snippet(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "facebook/sam-vit-base"
    (out / "adapter_config.json").write_text(json.dumps(config))
    card = hub.build_model_card(out, "someone/sam-infosam-demo")
    assert card.data.base_model == "facebook/sam-vit-base"
    assert card.data.model_name == "sam-infosam-demo"
    assert 'SamModel.from_pretrained("facebook/sam-vit-base")' in card.text
    assert 'PeftModel.from_pretrained(base, "someone/sam-infosam-demo")' in card.text


def test_card_renders_the_click_scores_apart_from_the_one_prompt_table(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    scores = {"click_iou": [0.5, 0.6, 0.7, 0.8, 0.9, 0.91], "click_dice": [0.6, 0.7, 0.8, 0.85, 0.92, 0.93],
              "noc@85": 4.5, "noc@90": 5.25}
    (out / "click_results.json").write_text(json.dumps({**scores, "before_training": {**scores, "noc@90": 6.0}}))
    metrics = json.loads((out / "test_results.json").read_text())
    metrics.update({"test_click_iou_1": 0.5, "test_noc@90": 5.25})  # what eval_clicks logs beside the one-prompt ones
    (out / "test_results.json").write_text(json.dumps(metrics))
    card = hub.build_model_card(out)
    assert "| | IoU@1 | IoU@3 | IoU@5 | IoU@6 | Dice@1 | Dice@3 | Dice@5 | Dice@6 | NoC@85 | NoC@90 |" in card.text
    assert "| this adapter | 0.5000 | 0.7000 | 0.9000 | 0.9100 | 0.6000 | 0.8000 | 0.9200 | 0.9300 | 4.5000 | 5.2500 |" \
        in card.text
    assert "| before training | 0.5000 |" in card.text and "| 6.0000 |" in card.text
    assert not [r for r in card.data.eval_results if "click" in r.metric_type or "noc" in r.metric_type]
    assert "6 when never reached" in card.text


# ---------------------------------------------------------------------------------- exact reload
def test_peft_and_auto_peft_reload_predict_exactly(run, monkeypatch):
    monkeypatch.chdir(run.out)  # a run under an absolute output_dir records its base as "base_model"
    batch = sample_batch()
    masks, scores = predict(run.model, batch)
    base = SamModel.from_pretrained(str(run.out / "base_model"))
    for loaded in (PeftModel.from_pretrained(base, str(run.out)), AutoPeftModel.from_pretrained(str(run.out))):
        loaded_masks, loaded_scores = predict(loaded.eval(), batch)
        assert torch.equal(loaded_masks, masks) and torch.equal(loaded_scores, scores)


@pytest.mark.slow
def test_auto_peft_reload_in_a_fresh_process(run, tmp_path):
    batch = sample_batch()
    masks, scores = predict(run.model, batch)
    save_file({"pixel_values": batch["pixel_values"], "input_boxes": batch["input_boxes"]}, str(tmp_path / "in.st"))
    code = (
        "import sys, torch\n"
        "from peft import AutoPeftModel\n"
        "from safetensors.torch import load_file, save_file\n"
        "inputs = load_file(sys.argv[2])\n"
        "model = AutoPeftModel.from_pretrained(sys.argv[1]).eval()\n"
        "with torch.no_grad():\n"
        "    out = model(**inputs, multimask_output=False)\n"
        "save_file({'masks': out.pred_masks.contiguous(), 'scores': out.iou_scores.contiguous()}, sys.argv[3])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(run.out), str(tmp_path / "in.st"), str(tmp_path / "o.st")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=run.out)  # base: "base_model"
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = load_file(str(tmp_path / "o.st"))
    assert torch.equal(fresh["masks"], masks) and torch.equal(fresh["scores"], scores)


# ---------------------------------------------------------------------------------------- export
def test_export_merges_into_a_plain_sam_model(run, tmp_path):
    merged_dir = tmp_path / "merged"
    assert export_main([str(run.out), str(merged_dir)]) == 0
    assert (merged_dir / "preprocessor_config.json").is_file()
    assert not any("relation_module" in k or "lora_" in k for k in load_file(str(merged_dir / "model.safetensors")))
    merged, info = SamModel.from_pretrained(str(merged_dir), output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    batch = sample_batch()
    masks, scores = predict(run.model, batch)
    merged_masks, merged_scores = predict(merged.eval(), batch)
    torch.testing.assert_close(merged_masks, masks, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged_scores, scores, rtol=0, atol=1e-5)


def test_export_refuses_a_non_adapter_dir(tmp_path, capsys):
    assert export_main([str(tmp_path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    with pytest.raises(hub.AdapterDirError):
        export_merged(str(tmp_path), tmp_path / "out")


# ------------------------------------------------------------------------------------------ push
class FakeHubApi:
    """Records Hub calls; uploads snapshot the uploaded files (as Hub's pattern filter selects them)."""

    def __init__(self, namespace="someone"):
        self.namespace = namespace
        self.calls = []
        self.uploads = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, private))
        full = repo_id if "/" in repo_id else f"{self.namespace}/{repo_id}"
        return SimpleNamespace(repo_id=full)

    def create_branch(self, repo_id, branch, exist_ok=False, token=None, **kwargs):
        self.calls.append(("create_branch", repo_id, branch))

    def upload_folder(self, repo_id, folder_path, commit_message=None, token=None, revision=None,
                      ignore_patterns=None, allow_patterns=None, run_as_future=False, path_in_repo=None, **kwargs):
        root = Path(folder_path)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        files = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        readme = (root / "README.md").read_text() if "README.md" in files else None
        self.uploads.append({"repo_id": repo_id, "files": files, "message": commit_message, "revision": revision,
                             "readme": readme, "path_in_repo": path_in_repo, "token": token})
        info = SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", repo_url=repo_id)
        if run_as_future:
            future = Future()
            future.set_result(info)
            return future
        return info


def test_push_script_uploads_the_adapter_dir(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "optimizer.pt").write_bytes(b"x")
    api = FakeHubApi()
    monkeypatch.setattr(hub_push, "_default_api", lambda: api)
    monkeypatch.setattr(push_command, "hub_unreachable_reason", lambda: None)  # the fake Hub answers
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert push_main([str(out), "someone/sam-demo", "--private", "--revision", "dev"]) == 0
    assert ("create_repo", "someone/sam-demo", True) in api.calls
    assert ("create_branch", "someone/sam-demo", "dev") in api.calls
    (upload,) = api.uploads
    assert upload["revision"] == "dev" and upload["token"] is None  # resolved by huggingface_hub
    files = set(upload["files"])
    assert {"adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json", "README.md"} <= files
    assert "base_model/config.json" in files and not any(f.startswith("checkpoint-") for f in files)
    card = ModelCard(upload["readme"])
    assert card.data.library_name == "peft"
    test_results = json.loads((out / "test_results.json").read_text())
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["iou"] == test_results["test_iou"]
    assert 'PeftModel.from_pretrained(base, "someone/sam-demo")' in card.text
    assert 'subfolder="base_model"' in card.text
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert not any(SECRET.encode() in p.read_bytes() for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("make_dir, repo", [("missing", "someone/x"), ("empty", "someone/x"),
                                           ("bin", "someone/x"), ("ok", "not a/valid/id")])
def test_push_script_one_line_errors(run, tmp_path, monkeypatch, capsys, make_dir, repo):
    api = FakeHubApi()
    monkeypatch.setattr(hub_push, "_default_api", lambda: api)
    monkeypatch.setattr(push_command, "hub_unreachable_reason", lambda: None)
    target = tmp_path / "dir"
    if make_dir != "missing":
        target.mkdir()
    if make_dir == "bin":
        shutil.copy(run.out / "adapter_config.json", target)
        (target / "adapter_model.bin").write_bytes(b"pickle")
    if make_dir == "ok":
        target.rmdir()
        shutil.copytree(run.out, target)
    assert push_main([str(target), repo]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not api.uploads


def test_push_to_hub_at_the_end_of_training(tmp_path, monkeypatch):
    import transformers.trainer

    api = FakeHubApi()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    monkeypatch.setattr(hub_push, "_default_api", lambda: api)
    out = tmp_path / "pushed"
    argv = [DEMO, "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1",
            "--push_to_hub", "true", "--hub_model_id", "sam-demo", "--hub_strategy", "checkpoint",
            "--hub_private_repo", "true", "--eval_before_training", "false", *QUICK]
    results = run_training(*parse_train_args(argv))
    assert ("create_repo", "sam-demo", True) in api.calls
    messages = [u["message"] for u in api.uploads]
    assert messages[-1] == "End of training"  # Trainer's own push, after the test evaluation and the card
    assert any(m.startswith("Training in progress") for m in messages)  # hub_strategy pushes during training
    assert any(u["path_in_repo"] == "last-checkpoint" for u in api.uploads)  # hub_strategy=checkpoint
    final = api.uploads[-1]
    assert final["repo_id"] == "someone/sam-demo"
    assert not any(f.startswith("checkpoint-") for f in final["files"])
    card = ModelCard(final["readme"])
    assert card.data.library_name == "peft" and "infosam" in card.data.tags
    recorded = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert recorded == {k.removeprefix("test_"): v for k, v in results["test"].items()
                        if k.removeprefix("test_") in recorded}
    assert set(METRICS) <= set(recorded)
    assert (out / "README.md").read_text() == final["readme"]  # the local card is the pushed one


# ------------------------------------------------------------------------------ relation reuse
def test_relation_from_an_adapter_and_an_official_pth(run, tmp_path):
    source = relation_state_from_adapter_weights(load_file(str(run.out / "adapter_model.safetensors")))
    trained = trained_relation(run.model).state_dict()
    assert all(torch.equal(source[k], trained[k]) for k in trained)

    official = {k: torch.randn_like(v) for k, v in source.items()}
    pth = tmp_path / "relation_models" / "3.pth"
    pth.parent.mkdir()
    torch.save({"relation_model": {f"module.{k}": v for k, v in official.items()}}, pth)

    for origin, expected in ((str(run.out), source), (str(pth), official)):
        model_args, peft_args, _, _ = parse_train_args([DEMO, "--relation_from", origin])
        student, _, _ = build_models(model_args, peft_args, str(tmp_path / "build"), seed=1)
        state = trained_relation(student).state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in state), origin


def test_relation_from_errors_are_one_line(tmp_path):
    for source in (str(tmp_path / "missing"), str(tmp_path / "missing.pth"), "./nowhere"):
        with pytest.raises(FileNotFoundError) as err:
            load_relation_state_dict(source)
        assert "\n" not in str(err.value)


def test_freeze_relation_keeps_it_fixed_and_out_of_the_optimizer(run, tmp_path):
    argv = [DEMO, "--relation_from", str(run.out), "--freeze_relation", "true", "--output_dir", str(tmp_path / "f"),
            "--max_steps", "2", *QUICK]
    model_args, peft_args, data_args, args = parse_train_args(argv)
    student, _, image_size = build_models(model_args, peft_args, args.output_dir, seed=args.seed)
    relation = trained_relation(student)
    before = {k: v.clone() for k, v in relation.state_dict().items()}
    lora_before = {n: p.detach().clone() for n, p in student.named_parameters() if "lora_B" in n}
    splits = build_datasets(data_args, image_size, seed=args.seed)
    assert not any(p.requires_grad for p in relation.parameters())
    trainer = InfoSAMTrainer(model=student, args=args, train_dataset=splits.train)
    trainer.train()
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in relation.parameters())
    assert all(torch.equal(relation.state_dict()[k], v) for k, v in before.items())
    assert any(not torch.equal(p, lora_before[n]) for n, p in student.named_parameters() if n in lora_before)


def test_card_method_names_are_peft_types():
    """Every entry of the card's method-name table is a registered peft type (the key the card looks up), so the
    table holds no names that are never looked up."""
    import peft.mapping

    from infosam_hf.hub.card import PEFT_DISPLAY_NAMES

    assert set(PEFT_DISPLAY_NAMES) <= {name.lower() for name in peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING}
