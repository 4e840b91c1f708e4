"""Training: ``InfoSAMConfig``, ``InfoSAMTrainer``, the recipe parser and the end-to-end run.

The names below load on first use, so the recipe parser (``infosam_hf.training.recipe``: YAML and the standard
library only) can be imported by ``--help`` and usage checks without torch.
"""

from ..import_hooks import lazy_attributes

# the public names: those of these submodules' __all__, each imported from its submodule on first use
__getattr__, __dir__, __all__ = lazy_attributes(__name__, (
    ".config", ".recipe", ".run", ".trainer"))
