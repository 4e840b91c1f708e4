"""The shipped accelerate configs load with accelerate's own loader and name real SAM classes."""

from pathlib import Path

import pytest
import transformers.models.sam.modeling_sam as modeling_sam
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate_configs"


@pytest.mark.parametrize("name, kind", [("ddp", DistributedType.MULTI_GPU), ("fsdp", DistributedType.FSDP),
                                        ("deepspeed_zero2", DistributedType.DEEPSPEED)])
def test_config_loads_and_says_when_to_use_it(name, kind):
    path = CONFIGS / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type == kind
    assert path.read_text().startswith("#"), "each config opens with a comment on when to use it"
    if kind == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == 2
        assert hasattr(modeling_sam, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])
    if kind == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2


def test_an_unknown_key_is_refused_by_accelerate(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "ddp.yaml").read_text() + "num_procesess: 2\n")
    with pytest.raises(ValueError, match="num_procesess"):
        load_config_from_file(str(bad))
