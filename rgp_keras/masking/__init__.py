"""What to mask and the masked layer: the layer registry, graph -> kernel masks, layer selection, the Keras 3
wrapper, the per-layer summary and the TensorBoard callback."""

from rgp_keras.masking.callbacks import RegularGraphSummaries
from rgp_keras.masking.masks import channel_groups, kernel_mask
from rgp_keras.masking.summary import PruningSummary, pruning_summary
from rgp_keras.masking.wrapper import RegularGraphPruning

__all__ = ["RegularGraphPruning", "RegularGraphSummaries", "PruningSummary", "channel_groups", "kernel_mask",
           "pruning_summary"]
