"""Data: sources as ``datasets.Dataset`` splits, SAM transforms, prompts and collation.

The names below load on first use, so light modules (``decoding``: numpy and PIL only) import without
``datasets`` or torch.
"""

from ..import_hooks import lazy_attributes

# public name -> the submodule that defines it
_LAZY = {
    "AUGMENTATIONS": ".augment",
    "SegmentationAugmenter": ".augment",
    "build_augmenter": ".augment",
    "DataArguments": ".arguments",
    "SamPromptCollator": ".collator",
    "DataError": ".decoding",
    "decode_image": ".decoding",
    "decode_mask": ".decoding",
    "sample_box": ".prompts",
    "sample_points": ".prompts",
    "SourceSplits": ".sources",
    "load_splits": ".sources",
    "make_synthetic_dataset": ".synthetic",
    "INDEX_COLUMN": ".transforms",
    "SamSegmentationTransform": ".transforms",
    "preprocess_image": ".transforms",
    "mask_report": ".mask_report",
    "DataValidationError": ".validation",
    "validate_splits": ".validation",
    "SegmentationSplits": ".splits",
    "augmenter_from_args": ".splits",
    "build_datasets": ".splits",
    "open_source": ".splits",
    "sam_transform_of": ".splits",
    "select_splits": ".splits",
    "take_first": ".splits",
    "validate_data": ".splits",
    "with_sam_transform": ".splits",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
