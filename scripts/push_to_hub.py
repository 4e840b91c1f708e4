#!/usr/bin/env python
"""``infosam push``: see ``python scripts/push_to_hub.py --help``."""

import sys

from infosam_hf.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
