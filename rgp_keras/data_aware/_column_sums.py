"""The compiled loop of `reconstruct.column_sums`: per-column sums and sums of squares in float64, in one pass.

numba compiles it on first use and caches the machine code on disk.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def column_sums(rows):
    """(sum, sum of squares) of each column of a 2-D array, accumulated in float64."""
    count, columns = rows.shape
    first, second = np.zeros(columns), np.zeros(columns)
    for i in range(count):
        for j in range(columns):
            value = np.float64(rows[i, j])
            first[j] += value
            second[j] += value * value
    return first, second
