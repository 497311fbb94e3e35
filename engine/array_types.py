"""Numpy arrays in type hints: the one place that spells "an array of any dtype".

Where the dtype is known, modules write ``npt.NDArray[np.int64]`` (or ``BoolArray``)
themselves. ``AnyArray`` is for the places where the dtype really varies with the data:
an event column (int64 amounts, float64 prices, object strings), a user's list values,
a result whose dtype follows the aggregation function.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

# Any: numpy's dtype parameter, which varies with the column; this alias is its one spelling.
AnyArray: TypeAlias = npt.NDArray[Any]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
