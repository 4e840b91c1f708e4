#!/usr/bin/env python
"""``infosam evaluate``: see ``python scripts/eval.py --help``."""

import sys

from infosam_hf.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
