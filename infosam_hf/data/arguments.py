"""``DataArguments``: the recipe keys for data sources, transforms, prompts and augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import check_choices
from .augment import RotateInterpolation, parse_augment_names, rotate_fill_label
from .prompts import PromptMode
from .transforms import ChannelOrder, EvalResolution, Preprocessing
from .validation import ValidationMode

__all__ = ["DataArguments"]


@dataclass
class DataArguments:
    """Where the data comes from and how samples become SAM inputs and prompts."""

    dataset_name_or_path: str = field(
        default="synthetic",
        metadata={"help": "'synthetic' (generated demo data), a Conv-LoRA CSV folder (<split>.csv with image,label), "
                          "an images/ + masks/ folder, an imagefolder with metadata.jsonl (file_name, "
                          "label_file_name), a save_to_disk folder, or a hub id."})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration name of a hub dataset (load_dataset's second argument)."})
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split for evaluation during training (default: 'validation' if present, "
                                        "else carved from train)."})
    test_split: str | None = field(default="test", metadata={"help": "Split for the final evaluation."})
    validation_split_percentage: float = field(
        default=10.0, metadata={"help": "Percent of train held out (seeded) when no validation split exists."})
    image_column: str = field(
        default="image", metadata={"help": "Image column of a hub / saved / imagefolder dataset (renamed to image)."})
    mask_column: str = field(
        default="label", metadata={"help": "Mask column of a hub / saved / imagefolder dataset (renamed to label)."})
    mask_threshold: float | None = field(
        default=None, metadata={"help": "Binary masks: foreground is value > threshold (default 127 when the mask's "
                                        "max is above 1, else 0; 16-bit masks are scaled to 8 bits first)."})
    invert_mask: bool = field(default=False, metadata={"help": "Swap foreground and background (e.g. ISBI)."})
    num_labels: int = field(default=1, metadata={"help": "1 for binary masks, else the number of classes."})
    ignore_index: int = field(
        default=255, metadata={"help": "Label id ignored in multi-class masks; ids >= num_labels are mapped to it."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Names of classes 0..num_labels-1 (default: classes.txt in the dataset folder, "
                                        "or the dataset's ClassLabel feature); shown in tables, cards and overlays."})
    mask_value_map: dict[int, int] | None = field(
        default=None, metadata={"help": "Replace raw mask values before anything else, e.g. {85: 1, 255: 2} (Trans10k); "
                                        "multi-class colour masks are then read as the mean of R, G, B (G-SAM)."})
    resize: list[int] | None = field(
        default=None, metadata={"help": "Resize every image to this fixed [H, W] (G-SAM) instead of the longest side "
                                        "to image_size plus padding; non-square sizes need dynamic_input_size."})
    random_crop: list[int] | None = field(
        default=None, metadata={"help": "Train on a random [h, w] window of the resized image (G-SAM's crops; "
                                        "evaluation sees the whole resized image). Needs dynamic_input_size."})
    image_mean: list[float] | None = field(
        default=None, metadata={"help": "Per-channel mean on the [0, 1] scale (default SAM's 0.485, 0.456, 0.406)."})
    image_std: list[float] | None = field(
        default=None, metadata={"help": "Per-channel std on the [0, 1] scale (default SAM's 0.229, 0.224, 0.225)."})
    train_prompt: PromptMode = field(default="mixed", metadata={"help": "box | point | points | mixed | none."})
    eval_prompt: PromptMode = field(default="box", metadata={"help": "box | point | points | none."})
    prompt_fg_points: int = field(default=1, metadata={"help": "Foreground points for prompt mode 'points'."})
    prompt_bg_points: int = field(default=0, metadata={"help": "Background points for prompt mode 'points'."})
    augment: list[str] = field(
        default_factory=list,
        metadata={"help": "Train-only augmentations, any of: hflip, vflip, rot90, rotate, color_jitter "
                          "(crops: random_crop)."})
    rotate_degrees: float = field(
        default=90.0, metadata={"help": "'rotate' augmentation: angle drawn uniformly in +-this many degrees."})
    rotate_prob: float = field(
        default=0.5, metadata={"help": "'rotate' augmentation: probability of rotating a sample (G-SAM: 1)."})
    rotate_interpolation: RotateInterpolation = field(
        default="bilinear", metadata={"help": "'rotate' augmentation: image resampling, bilinear or nearest (G-SAM)."})
    color_jitter: float = field(
        default=0.2, metadata={"help": "'color_jitter' augmentation: brightness/contrast/saturation factor range 1+-this."})
    validate_data: ValidationMode = field(
        default="headers",
        metadata={"help": "Checks of every image/mask pair before any model loads, all problems reported at once: "
                          "headers (sizes and modes, no pixel decode; fast), full (also decodes every file once: "
                          "finds truncated or corrupt files), none."})
    preprocessing: Preprocessing = field(
        default="sam",
        metadata={"help": "sam (SAM's image-processor convention) or official (the official InfoSAM loader: OpenCV's "
                          "BGR channels, black padding before normalising, no JPEG drafts, masks v // 255 when their "
                          "max is 255 else raw values, resized bilinearly as uint8; binary sets only)."})
    jpeg_draft: bool = field(default=True, metadata={"help": "Decode large JPEGs at reduced size (PIL draft)."})
    channel_order: ChannelOrder = field(
        default="rgb", metadata={"help": "rgb, or bgr: feed the channels reversed, as a loader that reads with OpenCV "
                                         "and never converts (G-SAM's Cityscapes)."})
    rotate_fill_label: str = field(
        default="ignore", metadata={"help": "Multi-class 'rotate': label of the corners rotated in from outside the "
                                            "frame: ignore (ignore_index) or a class id (G-SAM: 0)."})
    eval_resolution: EvalResolution = field(
        default="original", metadata={"help": "Score evaluation at the image's original size (logits resized to it) or "
                                              "at the resized model input (input: labels resized NEAREST; G-SAM)."})
    objects_per_image: int = field(
        default=1, metadata={"help": "Instance sets (COCO, instance-id masks, an objects column): train on up to this "
                                     "many objects of an image per example (drawn per epoch, seeded), with one image "
                                     "encoder pass for all of them. 1: one object per example. Data with one mask "
                                     "per image keeps one object."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval and test splits."})
    synthetic_num_train: int = field(default=256, metadata={"help": "Synthetic demo: train images."})
    synthetic_num_eval: int = field(default=32, metadata={"help": "Synthetic demo: validation images."})
    synthetic_num_test: int = field(default=64, metadata={"help": "Synthetic demo: test images."})
    synthetic_image_size: int = field(default=128, metadata={"help": "Synthetic demo: image side in pixels."})
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic demo: generator seed."})

    def __post_init__(self):
        check_choices(self)
        if self.eval_prompt == "mixed":
            raise ValueError("eval_prompt='mixed' would make evaluation depend on batching; use box or point")
        if self.preprocessing == "official":
            clash = [key for key, default in (("num_labels", 1), ("mask_threshold", None), ("invert_mask", False),
                                              ("mask_value_map", None), ("channel_order", "rgb"))
                     if getattr(self, key) != default]
            if clash:
                raise ValueError(f"preprocessing=official reads binary masks as the official loader does; it does not "
                                 f"take {', '.join(clash)}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        if not 0 <= self.validation_split_percentage < 100:
            raise ValueError(f"validation_split_percentage must be in [0, 100), got {self.validation_split_percentage}")
        if self.objects_per_image < 1:
            raise ValueError(f"objects_per_image must be >= 1, got {self.objects_per_image}")
        if self.prompt_fg_points < 0 or self.prompt_bg_points < 0:
            raise ValueError("prompt_fg_points and prompt_bg_points must be >= 0")
        for key in ("resize", "random_crop"):
            value = getattr(self, key)
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise ValueError(f"{key} must be [height, width] in pixels, got {value}")
        for key in ("image_mean", "image_std"):
            value = getattr(self, key)
            if value is not None and (len(value) != 3 or (key == "image_std" and min(value) <= 0)
                                      or max(abs(v) for v in value) > 1):
                raise ValueError(f"{key} must be 3 values on the [0, 1] scale, got {value}")
        canvas = self.random_crop or self.resize
        if canvas and canvas[0] != canvas[1] and "rot90" in parse_augment_names(self.augment):
            raise ValueError(f"augment rot90 would turn the {canvas[0]}x{canvas[1]} training inputs on their side; "
                             "use rotate (same canvas) or a square random_crop")
        rotate_fill_label(self.rotate_fill_label, self.num_labels, self.ignore_index)  # fails early on a bad value
        if self.mask_value_map is not None:
            try:
                self.mask_value_map = {int(k): int(v) for k, v in self.mask_value_map.items()}
            except (TypeError, ValueError):
                raise ValueError(f"mask_value_map must map integers to integers, got {self.mask_value_map}") from None
