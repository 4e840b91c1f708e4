"""The shipped accelerate configs: each is documented, loads with accelerate's own config class as the
distributed type the docs give it, and the FSDP config wraps a layer our SAM has."""

import re

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

from tests.testing_utils import ROOT, tiny_sam

CONFIGS = ROOT / "recipes" / "accelerate_configs"
DOCS = ROOT / "docs" / "source" / "multi_gpu.md"
KINDS = {"single": DistributedType.NO, "ddp": DistributedType.MULTI_GPU, "fsdp": DistributedType.FSDP,
         "deepspeed_zero2": DistributedType.DEEPSPEED}


def test_the_docs_list_exactly_the_shipped_configs():
    listed = set(re.findall(r"`(\w+)\.yaml`", DOCS.read_text()))
    assert listed == {path.stem for path in CONFIGS.glob("*.yaml")} == set(KINDS)


@pytest.mark.parametrize("name, kind", KINDS.items())
def test_config_loads_as_its_distributed_type(name, kind):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))  # an unknown or mistyped key raises here
    assert isinstance(config, ClusterConfig) and config.distributed_type == kind
    assert config.num_processes == 1 if kind == DistributedType.NO else config.num_processes > 1
    if kind == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == 2
        layer = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert layer in {type(module).__name__ for module in tiny_sam().modules()}, f"SAM has no {layer}"
    if kind == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2


def test_each_config_path_in_the_docs_exists():
    for page in (ROOT / "docs" / "source").glob("*.md"):
        for path in re.findall(r"recipes/accelerate_configs/(\w+)\.yaml", page.read_text()):
            assert (CONFIGS / f"{path}.yaml").is_file(), f"{page.name} names a missing config {path}.yaml"
