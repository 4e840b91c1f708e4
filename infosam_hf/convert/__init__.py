"""Checkpoint converters: original ``segment_anything`` SAM (:mod:`.sam`) and official InfoSAM (:mod:`.infosam`);
ONNX export (:mod:`.onnx`).

A subpackage above ``models`` and ``tuners``: the InfoSAM converter builds a peft student. The names below load
on first use (:mod:`.presets` needs no torch)."""

from ..import_hooks import lazy_attributes

# the public names: those of these submodules' __all__, each imported from its submodule on first use
__getattr__, __dir__, __all__ = lazy_attributes(__name__, (
    ".presets", ".infosam", ".sam"))
