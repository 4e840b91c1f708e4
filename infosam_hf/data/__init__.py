"""Data: sources as ``datasets.Dataset`` splits, SAM transforms, prompts and collation.

The names below load on first use, so light modules (``decoding``: numpy and PIL only) import without
``datasets`` or torch.
"""

from ..import_hooks import lazy_attributes

# the public names: those of these submodules' __all__, each imported from its submodule on first use
__getattr__, __dir__, __all__ = lazy_attributes(__name__, (
    ".arguments", ".augment", ".collator", ".decoding", ".prompts", ".sources", ".synthetic", ".transforms",
    ".mask_report", ".validation", ".splits"))
