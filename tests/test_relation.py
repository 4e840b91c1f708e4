import io
import os
import pickle

import pytest
import torch

from infosam_hf import RelationModule, load_official_relation_state_dict

EXPECTED_KEYS = {
    "query_proj.weight", "query_proj.bias", "key_proj.weight", "key_proj.bias",
    "layer_norm_feat.weight", "layer_norm_feat.bias", "layer_norm_mask.weight", "layer_norm_mask.bias",
}


def test_state_dict_keys_match_official_names():
    assert set(RelationModule(256).state_dict()) == EXPECTED_KEYS


def test_forward_matches_the_specification():
    torch.manual_seed(0)
    dim, hw = 16, 25
    module = RelationModule(dim)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    feats, token = torch.randn(3, hw, dim), torch.randn(3, 1, dim)
    out = module(feats, token)
    assert out.shape == (3, hw)

    f = torch.nn.functional.layer_norm(feats.double(), (dim,), module.layer_norm_feat.weight.double(),
                                       module.layer_norm_feat.bias.double())
    t = torch.nn.functional.layer_norm(token.double(), (dim,), module.layer_norm_mask.weight.double(),
                                       module.layer_norm_mask.bias.double())
    q = t @ module.query_proj.weight.double().T + module.query_proj.bias.double()
    k = f @ module.key_proj.weight.double().T + module.key_proj.bias.double()
    score = (q @ k.transpose(1, 2)) / dim**0.5 + t @ f.transpose(1, 2)  # residual term is not scaled
    score = score.squeeze(1)
    expected = score / score.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3), rtol=1e-5, atol=1e-5)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="mask_token"):
        RelationModule(8)(torch.randn(2, 4, 8), torch.randn(2, 2, 8))


def test_official_checkpoint_loads_strictly(tmp_path):
    source = RelationModule(32)
    (tmp_path / "relation_models").mkdir()
    path = tmp_path / "relation_models" / "9.pth"
    # official checkpoints come from DDP training: keys carry a 'module.' prefix
    torch.save({"relation_model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = RelationModule(32)
    target.load_state_dict(load_official_relation_state_dict(path), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/infosam_pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    buffer = io.BytesIO()
    pickle.dump({"relation_model": _Exploit()}, buffer)
    # torch.save-compatible zip would also be refused; a raw pickle is the classic attack
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="not a safe relation checkpoint"):
        load_official_relation_state_dict(path)
    evil_zip = tmp_path / "evil_zip.pth"
    torch.save({"relation_model": _Exploit()}, evil_zip)
    with pytest.raises(ValueError, match="not a safe relation checkpoint"):
        load_official_relation_state_dict(evil_zip)
    assert not os.path.exists("/tmp/infosam_pwned")
