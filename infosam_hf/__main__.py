"""``python -m infosam_hf COMMAND ...`` is ``infosam COMMAND ...``."""

import sys

from .commands.cli import main

sys.exit(main())
