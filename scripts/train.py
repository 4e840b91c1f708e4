#!/usr/bin/env python
"""Fine-tune SAM with InfoSAM: ``[accelerate launch] scripts/train.py RECIPE.yaml [--key value ...]``."""

import sys

from infosam_hf.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
