#!/usr/bin/env python
"""``infosam predict``: see ``python scripts/predict.py --help``."""

import sys

from infosam_hf.commands.predict import main

if __name__ == "__main__":
    sys.exit(main())
