"""Deprecated: `mtlzoo.metrics_delta` moved to `mtlzoo.metrics.delta`; this name forwards to that module."""

import sys
import warnings

from mtlzoo.metrics import delta as _moved

warnings.warn("mtlzoo.metrics_delta moved to mtlzoo.metrics.delta; import it from there.", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _moved
