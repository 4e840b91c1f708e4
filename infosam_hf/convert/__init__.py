"""Checkpoint converters: original ``segment_anything`` SAM (:mod:`.sam`) and official InfoSAM (:mod:`.infosam`);
ONNX export (:mod:`.onnx`).

A subpackage above ``models`` and ``tuners``: the InfoSAM converter builds a peft student. The names below load
on first use (:mod:`.presets` needs no torch)."""

from ..import_hooks import lazy_attributes

# public name -> the submodule that defines it
_LAZY = {
    "DEFAULT_DECODER_HEADS": ".presets",
    "OFFICIAL_HUB_REPO": ".presets",
    "ORIGINAL_SAM_PRESETS": ".presets",
    "convert_official_infosam": ".infosam",
    "official_infosam_to_peft": ".infosam",
    "resolve_checkpoint_file": ".infosam",
    "split_official_infosam_state": ".infosam",
    "CheckpointLayoutError": ".sam",
    "convert_original_sam": ".sam",
    "hf_to_original_state_dict": ".sam",
    "infer_sam_config": ".sam",
    "load_original_state_dict": ".sam",
    "original_to_hf_state_dict": ".sam",
    "sam_from_original_state_dict": ".sam",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
