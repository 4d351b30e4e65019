"""`python -m mtlzoo.cli ...`, the same as the `mtlzoo` command."""

import sys

from mtlzoo.cli import main

sys.exit(main())
