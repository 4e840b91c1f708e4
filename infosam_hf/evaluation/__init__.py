"""Evaluation: metrics, the streamed evaluation loop, scoring and predicting with an adapter, pictures.

The names below load on first use, so light modules (``prompt_input``: reading and checking ``predict``'s images and
prompts) import without torch. ``load_for_inference`` comes through :mod:`.everything`, which gives every model it
loads ``generate_masks``.
"""

from ..import_hooks import lazy_attributes

# the public names: those of these submodules' __all__, each imported from its submodule on first use
__getattr__, __dir__, __all__ = lazy_attributes(__name__, (
    ".everything", ".evaluate", ".loop", ".metrics", ".prompt_input", ".predict"))
