"""Regular graphs for RGP: generation, ASPL statistics and ASPL optimisation.

Pure numpy + igraph: importing this package never imports TensorFlow.
"""

from rgp_keras.graph._optimize import OptimizeResult, auto_symmetry, default_attempts, optimize, warm_up
from rgp_keras.graph._regular import (
    RegularGraph,
    degree_for_sparsity,
    exact_nodes,
    moore_bound,
    nearest_degree,
    warn_if_sparsity_differs,
)

__all__ = [
    "auto_symmetry",
    "OptimizeResult",
    "RegularGraph",
    "default_attempts",
    "degree_for_sparsity",
    "exact_nodes",
    "moore_bound",
    "nearest_degree",
    "optimize",
    "warn_if_sparsity_differs",
    "warm_up",
]
