#!/usr/bin/env python
"""``infosam convert``: see ``python scripts/convert.py --help``."""

import sys

from infosam_hf.commands.convert import main

if __name__ == "__main__":
    sys.exit(main())
