"""``python -m MedSegExtension`` runs the ``medseg`` command line."""

import sys

from .cli.main import main

sys.exit(main())
