#!/usr/bin/env python
"""Push a finished run to the Hub: ``scripts/push_to_hub.py OUTPUT_DIR REPO_ID [--private] [--revision REV]``.

The token is read by huggingface_hub (``HF_TOKEN`` or ``hf auth login``); it is never printed.
"""

import sys

from infosam_hf.hub import main

if __name__ == "__main__":
    sys.exit(main())
