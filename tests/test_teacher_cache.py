"""The teacher-embedding cache's storage, keys and validity rule."""

import pytest
import torch

from infosam_hf.training.teacher_cache import (TeacherEmbeddingCache, teacher_fingerprint, pixel_changing_options,
                                               resolve_teacher_cache)


def test_round_trip_is_exact_and_keys_separate_caches(tmp_path):
    cache = TeacherEmbeddingCache({"dataset": "abc", "image_size": 64}, root=tmp_path)
    embeddings = torch.randn(3, 8, 4, 4)
    assert cache.get([0, 1, 2]) is None
    cache.put([5, 7, 9], embeddings)
    assert torch.equal(cache.get([9, 5]), embeddings[[2, 0]])
    assert cache.get([5, 6]) is None  # one missing entry: no partial answer
    assert len(cache) == 3 and (cache.hits, cache.misses) == (1, 2)
    again = TeacherEmbeddingCache({"image_size": 64, "dataset": "abc"}, root=tmp_path)  # key order is irrelevant
    assert again.directory == cache.directory and torch.equal(again.get([7]), embeddings[1:2])
    other = TeacherEmbeddingCache({"dataset": "abc", "image_size": 128}, root=tmp_path)
    assert other.directory != cache.directory and other.get([5]) is None
    assert not list(cache.directory.glob(".tmp-*"))  # nothing half-written left behind


def test_half_precision_storage_and_existing_entries_are_kept(tmp_path):
    cache = TeacherEmbeddingCache({"k": 1}, root=tmp_path, dtype="float16")
    first = torch.randn(1, 2, 3, 3)
    cache.put([0], first)
    cache.put([0], torch.zeros(1, 2, 3, 3))  # already present: kept, not overwritten
    stored = cache.get([0])
    assert stored.dtype == torch.float32
    torch.testing.assert_close(stored, first.half().float())
    with pytest.raises(ValueError, match="teacher_cache_dtype"):
        TeacherEmbeddingCache({"k": 1}, root=tmp_path, dtype="int8")


def test_auto_turns_on_exactly_when_valid_and_on_names_the_culprit():
    assert resolve_teacher_cache("auto", []) is True
    assert resolve_teacher_cache("off", []) is False
    changes = pixel_changing_options(["hflip"], random_crop=[128, 128])
    assert changes == ["augment: hflip", "random_crop: [128, 128]"]
    assert resolve_teacher_cache("auto", changes) is False
    with pytest.raises(ValueError, match="augment: hflip changes the pixels"):
        resolve_teacher_cache("on", changes)
    with pytest.raises(ValueError, match=r"teacher_cache='sometimes' is not one of \[auto, off, on\]"):
        resolve_teacher_cache("sometimes", [])


def test_teacher_fingerprint_follows_the_frozen_weights_only():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    for model in (a, b):
        model.bias.requires_grad_(False)  # frozen: part of what the teacher computes with
    assert teacher_fingerprint(a) == teacher_fingerprint(b)
    with torch.no_grad():
        b.weight[0, 0] += 1.0  # trained (requires_grad): not part of the teacher
    assert teacher_fingerprint(a) == teacher_fingerprint(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert teacher_fingerprint(a) != teacher_fingerprint(b)
