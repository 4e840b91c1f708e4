#!/usr/bin/env python
"""Masks and overlays for new images: ``scripts/predict.py --adapter DIR --images GLOB --box x0,y0,x1,y1 --out DIR``.

See ``infosam_hf.predict`` for the prompt formats (``--box``, ``--points``, ``--auto``).
"""

import sys

from infosam_hf.predict import main

if __name__ == "__main__":
    sys.exit(main())
