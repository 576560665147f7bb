"""``nclsm_utils.dataset`` as before (users' notebooks import ``Dataset`` from here): an alias
of :mod:`nclsm_utils.core.dataset`, where the dataset now lives."""
import sys

from .core import dataset as _dataset

sys.modules[__name__] = _dataset
