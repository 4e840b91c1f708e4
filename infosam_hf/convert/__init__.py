"""Checkpoint converters: original ``segment_anything`` SAM (:mod:`.sam`) and official InfoSAM (:mod:`.infosam`).

A subpackage above ``models`` and ``tuners``: the InfoSAM converter builds a peft student."""

from .infosam import (
    OFFICIAL_HUB_REPO,
    convert_official_infosam,
    official_infosam_to_peft,
    resolve_checkpoint_file,
    split_official_infosam_state,
)
from .sam import (
    DEFAULT_DECODER_HEADS,
    ORIGINAL_SAM_PRESETS,
    CheckpointLayoutError,
    convert_original_sam,
    hf_to_original_state_dict,
    infer_sam_config,
    load_original_state_dict,
    original_to_hf_state_dict,
    sam_from_original_state_dict,
)

__all__ = [
    "DEFAULT_DECODER_HEADS",
    "OFFICIAL_HUB_REPO",
    "ORIGINAL_SAM_PRESETS",
    "CheckpointLayoutError",
    "convert_official_infosam",
    "convert_original_sam",
    "hf_to_original_state_dict",
    "infer_sam_config",
    "load_original_state_dict",
    "official_infosam_to_peft",
    "original_to_hf_state_dict",
    "resolve_checkpoint_file",
    "sam_from_original_state_dict",
    "split_official_infosam_state",
]
