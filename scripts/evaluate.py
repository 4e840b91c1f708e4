#!/usr/bin/env python
"""Score an adapter on a dataset split: ``scripts/evaluate.py --adapter DIR --dataset_name_or_path PATH ...``.

``--adapter none --base_model B`` scores the zero-shot base model. See ``infosam_hf.evaluate_cli``.
"""

import sys

from infosam_hf.evaluate_cli import main

if __name__ == "__main__":
    sys.exit(main())
