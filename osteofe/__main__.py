"""``python -m osteofe`` runs the command line."""

import sys

from osteofe.cli import main

sys.exit(main())
