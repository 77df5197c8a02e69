"""Data-aware pruning of a trained model: calibration data, channel assignment, reconstruction, distillation.

`prune_regular_graph` runs the steps in `steps` around cloning: `plan` before the pruned model is built,
`finish` after it.
"""

from rgp_keras.data_aware.distill import SoftTargetDistillation, distiller
from rgp_keras.data_aware.steps import best_of, checked_calibration, finish, plan

__all__ = ["SoftTargetDistillation", "best_of", "checked_calibration", "distiller", "finish", "plan"]
