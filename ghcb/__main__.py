"""``python -m ghcb``: the same as the ``ghcb`` command."""

from __future__ import annotations

import sys

from ghcb.cli import main

sys.exit(main())
