"""What the converters know without loading anything: the released SAM architectures and where the official InfoSAM
checkpoints live (read by `infosam convert --help` without torch)."""

__all__ = ["DEFAULT_DECODER_HEADS", "OFFICIAL_HUB_REPO", "ORIGINAL_SAM_PRESETS"]

# model_type -> (embed dim, depth, heads, global attention indexes) of the released SAM checkpoints.
ORIGINAL_SAM_PRESETS = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
# Not stored in a checkpoint: every released SAM-format model uses 8 heads in the two-way transformer.
DEFAULT_DECODER_HEADS = 8
OFFICIAL_HUB_REPO = "MuyaoYuan/InfoSAM"  # the official checkpoints on the Hub
