#!/usr/bin/env python
"""``infosam download``: see ``python scripts/download_data.py --help``."""

import sys

from infosam_hf.commands.download import main

if __name__ == "__main__":
    sys.exit(main())
