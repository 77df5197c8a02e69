"""The tf_keras (Keras 2) layer classes of the TF-MOT path, registered with tf_keras at import.

`PruneRegularGraph` subclasses TF-MOT's `PruneLowMagnitude` with the RGP mask
preset at build time and a schedule (`RegularGraphSchedule`) that never asks
for a mask update, so TF-MOT's machinery (`UpdatePruningStep`,
`PruningSummaries`, `strip_pruning`, `prune_scope`, PQAT) runs unchanged and
the masks are never recomputed by magnitude.

Importing this module imports tf_keras and TF-MOT. `import rgp_keras` imports
it as soon as TF-MOT is imported (before or after rgp_keras), so
`tf_keras.models.load_model` finds these classes in a fresh process.
"""

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from rgp_keras.graph import RegularGraph
from rgp_keras.masking.masks import kernel_mask, prunable_kernel


@tf_keras.utils.register_keras_serializable(package="rgp_keras")
class RegularGraphSchedule(tfmot.sparsity.keras.PruningSchedule):
    """A TF-MOT pruning schedule that never updates masks: RGP masks are fixed at build time.

    `sparsity` is reported to TF-MOT (and its summaries) as the target.
    """

    def __init__(self, sparsity):
        self.sparsity = float(sparsity)

    def __call__(self, step):
        return tf.constant(False), tf.constant(self.sparsity, tf.float32)

    def get_config(self):
        return {"class_name": "RegularGraphSchedule", "config": {"sparsity": self.sparsity}}


@tf_keras.utils.register_keras_serializable(package="rgp_keras")
class PruneRegularGraph(PruneLowMagnitude):
    """TF-MOT's pruning wrapper with a fixed regular-graph mask on each prunable weight.

    Args:
        layer: a tf_keras Dense/Conv layer (or separable conv: pointwise
            kernel), or a custom layer implementing TF-MOT's
            `PrunableLayer.get_prunable_weights` (weights laid out
            `(..., in, out)`).
        graph: the `RegularGraph` that decides the masks.
        self_loops: also keep group i -> group i.
    """

    def __init__(self, layer, graph, self_loops=False, **kwargs):
        for key in ("pruning_schedule", "block_size", "block_pooling_type", "sparsity_m_by_n"):
            kwargs.pop(key, None)
        self.graph = RegularGraph.from_config(graph) if isinstance(graph, dict) else graph
        self.self_loops = bool(self_loops)
        density = (self.graph.degree + self.self_loops) / self.graph.nodes
        super().__init__(layer, pruning_schedule=RegularGraphSchedule(1 - density), **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        for weight, mask, _ in self.pruning_vars:
            layout = _layout(self.layer, weight)
            mask.assign(kernel_mask(self.graph, weight.shape, layout, self.self_loops).astype(mask.dtype.name))
            weight.assign(weight * mask)

    @property
    def kernel(self):
        return self.pruning_vars[0][0]

    @property
    def mask(self):
        return self.pruning_vars[0][1]

    @property
    def density(self):
        return float(np.mean(self.mask.numpy()))

    def masked_kernel(self):
        return self.kernel * self.mask

    def get_config(self):
        config = super().get_config()
        config.update(graph=self.graph.get_config(), self_loops=self.self_loops)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = tf_keras.layers.deserialize(config.pop("layer"))
        return cls(layer, **config)


def _layout(layer, weight):
    attribute, layout = prunable_kernel(layer)
    if attribute and getattr(layer, attribute) is weight:
        return layout
    return "dense" if len(weight.shape) == 2 else "conv"
