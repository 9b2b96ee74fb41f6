"""``python -m ballistix``: the ``ballistix`` command."""

import sys

from .cli import main

sys.exit(main())
