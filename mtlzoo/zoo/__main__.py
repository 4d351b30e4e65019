"""`python -m mtlzoo.zoo publish ...` and `python -m mtlzoo.zoo list`."""

import os
import sys

from mtlzoo.zoo.publishing import main

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.exit(main())
