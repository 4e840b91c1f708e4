#!/usr/bin/env python
"""Merge a trained adapter into its base SAM: ``scripts/export.py ADAPTER_DIR_OR_REPO OUT [--base_model B]``."""

import sys

from infosam_hf.export import main

if __name__ == "__main__":
    sys.exit(main())
