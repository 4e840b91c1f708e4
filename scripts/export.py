#!/usr/bin/env python
"""``infosam export``: see ``python scripts/export.py --help``."""

import sys

from infosam_hf.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
