"""``python -m domaingpt`` (and ``torchrun -m domaingpt``) run the CLI."""

import sys

from domaingpt.launch import main

sys.exit(main())
