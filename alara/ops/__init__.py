"""CT operators: projection, its exact adjoint and filtered backprojection.

Every function takes ``backend="auto" | "native" | "torch"``; see :mod:`alara.ops.backend`.
"""

from alara.ops.backend import BACKENDS, native_available
from alara.ops.fbp import FILTERS, fbp
from alara.ops.projection import backproject, project

__all__ = ["BACKENDS", "FILTERS", "backproject", "fbp", "native_available", "project"]
