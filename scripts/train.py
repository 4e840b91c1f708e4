#!/usr/bin/env python
"""``infosam train``: see ``python scripts/train.py --help``."""

import sys

from infosam_hf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
