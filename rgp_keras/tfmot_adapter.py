"""RGP for tf_keras (Keras 2) models through TF-MOT: wrappers that TF-MOT's own tools treat as theirs.

`PruneRegularGraph` subclasses TF-MOT's `PruneLowMagnitude` with the RGP mask
preset at build time and a schedule (`RegularGraphSchedule`) that never asks
for a mask update, so TF-MOT's machinery (`UpdatePruningStep`,
`PruningSummaries`, `strip_pruning`, `prune_scope`, PQAT) runs unchanged and
the masks are never recomputed by magnitude. Selection of layers and the
graph -> mask mapping are the Keras 3 path's (`rgp_keras.prune`,
`rgp_keras.masks`).

This module imports tf_keras and TF-MOT; `rgp_keras` loads it only when a
tf_keras model is passed.
"""

import functools

import numpy as np

from rgp_keras import data_aware
from rgp_keras.masks import kernel_mask, prunable_kernel
from rgp_keras.model_graph import leaves
from rgp_keras.prune import _paired_leaves, _select, skip_reason

_INSTALL = "pip install 'tensorflow-model-optimization==0.8.1' 'tf_keras~=2.21.0'"


@functools.cache
def _api():
    """(tf_keras, tfmot, PruneRegularGraph, RegularGraphSchedule), imported and defined on first use."""
    try:
        import tf_keras
        import tensorflow_model_optimization as tfmot
        from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude
    except ImportError as error:
        raise ImportError(f"The tf_keras path needs tf_keras and TF-MOT ({error}); install them: {_INSTALL}") from None
    import tensorflow as tf

    from rgp_keras.wrapper import graph_from_config, graph_to_config

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
            self.graph = graph_from_config(graph) if isinstance(graph, dict) else graph
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
            config.update(graph=graph_to_config(self.graph), self_loops=self.self_loops)
            return config

        @classmethod
        def from_config(cls, config):
            config = dict(config)
            layer = tf_keras.layers.deserialize(config.pop("layer"))
            return cls(layer, **config)

    return tf_keras, tfmot, PruneRegularGraph, RegularGraphSchedule


def _layout(layer, weight):
    attribute, layout = prunable_kernel(layer)
    if attribute and getattr(layer, attribute) is weight:
        return layout
    return "dense" if len(weight.shape) == 2 else "conv"


def _is_tfmot_wrapper(layer):
    return any(cls.__name__ == "PruneLowMagnitude" for cls in type(layer).__mro__)


def _reason(layer, graph):
    """`skip_reason` extended to TF-MOT wrappers and custom `PrunableLayer`s."""
    if _is_tfmot_wrapper(layer):
        return "already pruned (wrapped by TF-MOT's prune_low_magnitude); strip it first to apply RGP"
    if prunable_kernel(layer)[0] is None and hasattr(layer, "get_prunable_weights"):
        if graph is None:
            return None
        for weight in layer.get_prunable_weights():
            shape = tuple(weight.shape)
            if len(shape) < 2 or min(shape[-2:]) < graph.nodes:
                return f"prunable weight of shape {shape}: fewer channels than the graph's {graph.nodes} nodes"
        return None
    return skip_reason(layer, graph)


def prune_regular_graph(
    to_prune, graph, *, self_loops, skip_first, skip_last, layers, calibration_data, calibration_samples, assign_channels
):
    """The tf_keras side of `rgp_keras.prune_regular_graph` (same arguments, graph resolved)."""
    tf_keras, _, PruneRegularGraph, _ = _api()
    if not isinstance(to_prune, tf_keras.Model):
        if _is_tfmot_wrapper(to_prune):
            raise ValueError(f"Layer {to_prune.name!r} is already pruned: {_reason(to_prune, graph)}.")
        reason = _reason(to_prune, None)
        if reason:
            raise ValueError(f"Layer {to_prune.name!r} cannot be pruned by RGP: {reason}.")
        return PruneRegularGraph(to_prune, graph, self_loops=self_loops)
    _check_model(to_prune, tf_keras)
    walked = list(leaves(to_prune))
    if layers is None and not any(_reason(layer, None) is None for layer in walked) and any(map(_is_tfmot_wrapper, walked)):
        raise ValueError(
            f"Model {to_prune.name!r} is already pruned by TF-MOT's prune_low_magnitude on every prunable "
            "layer; apply RGP to the original model, or strip it first (tfmot.sparsity.keras.strip_pruning)."
        )
    selected = _select(to_prune, graph, layers, skip_first, skip_last, reason_of=_reason)
    plan = data_aware.plan(to_prune, graph, selected, self_loops, calibration_data, calibration_samples, assign_channels)

    def wrap(layer):
        clone = _clone(layer, wrap, tf_keras)
        if id(layer) in selected:
            return PruneRegularGraph(clone, graph, self_loops=self_loops)
        return clone

    pruned = tf_keras.models.clone_model(to_prune, clone_function=wrap)
    pairs = list(_paired_leaves(to_prune, pruned))
    for original, new in pairs:
        target = new.layer if id(original) in selected else new
        if id(original) in plan.weights:
            target.set_weights(plan.weights[id(original)])
        else:
            _copy_variables(original, target)
        if id(original) in selected:
            for weight, mask, _ in new.pruning_vars:
                weight.assign(weight * mask)
    reference = to_prune
    if plan.arrays is not None and plan.weights:
        reference = tf_keras.models.clone_model(to_prune)
        for original, new in _paired_leaves(to_prune, reference):
            new.set_weights(plan.weights.get(id(original)) or original.get_weights())
    data_aware.finish(plan, reference, pruned, pairs)
    return pruned


def strip_pruning(model):
    """tf_keras side of `rgp_keras.strip_pruning`: RGP and TF-MOT wrappers removed, weights * masks."""
    tf_keras, _, _, _ = _api()
    _check_model(model, tf_keras)

    def unwrap(layer):
        if _is_tfmot_wrapper(layer):
            return _clone(layer.layer, unwrap, tf_keras)
        return _clone(layer, unwrap, tf_keras)

    stripped = tf_keras.models.clone_model(model, clone_function=unwrap)
    for original, new in _paired_leaves(model, stripped):
        if _is_tfmot_wrapper(original):
            _copy_variables(original.layer, new)
            masks = {id(weight): mask for weight, mask, _ in original.pruning_vars}
            for old, fresh in zip(original.layer.weights, new.weights):
                if id(old) in masks:
                    fresh.assign(old * masks[id(old)])
        else:
            _copy_variables(original, new)
    return stripped


def _clone(layer, clone_function, tf_keras):
    if isinstance(layer, tf_keras.Model):
        return tf_keras.models.clone_model(layer, clone_function=clone_function)
    return layer.__class__.from_config(layer.get_config())


def _copy_variables(source, target):
    if len(source.weights) != len(target.weights):
        raise AssertionError(f"cloning changed the variables of layer {source.name!r}")
    for old, new in zip(source.weights, target.weights):
        new.assign(old)


def _check_model(model, tf_keras):
    if not isinstance(model, tf_keras.Model):
        raise TypeError(
            f"`model` must be a tf_keras Model for the TF-MOT path, got {type(model).__name__}; "
            "Keras 3 models go through rgp_keras.prune_regular_graph / strip_pruning directly."
        )
    if not (isinstance(model, tf_keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise TypeError(
            f"{type(model).__name__} is a subclassed tf_keras model, which cannot be cloned layer by layer; "
            "wrap its layers instead: `rgp_keras.prune_regular_graph(tf_keras.layers.Conv2D(...), degree=8)`."
        )
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built: give it an Input so that kernel shapes are known.")

