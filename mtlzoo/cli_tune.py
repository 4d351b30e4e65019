"""Deprecated: `mtlzoo.cli_tune` moved to `mtlzoo.cli.tune`; this name forwards to that module."""

import sys
import warnings

from mtlzoo.cli import tune as _moved

warnings.warn("mtlzoo.cli_tune moved to mtlzoo.cli.tune; import it from there.", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _moved
