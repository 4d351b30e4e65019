"""Deprecated: `mtlzoo.cli_training` moved to `mtlzoo.cli.training`; this name forwards to that module."""

import sys
import warnings

from mtlzoo.cli import training as _moved

warnings.warn("mtlzoo.cli_training moved to mtlzoo.cli.training; import it from there.", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _moved
