"""RGP for tf_keras (Keras 2) models through TF-MOT: pruning and stripping whole tf_keras models.

The layer classes (`PruneRegularGraph`, a TF-MOT `PruneLowMagnitude`) live in
`rgp_keras.tfmot.layers`. Selection of layers and the graph -> mask mapping
are the Keras 3 path's (`rgp_keras.prune`, `rgp_keras.masking.masks`). `rgp_keras`
loads this module only when a tf_keras model is passed.
"""

import functools

from rgp_keras import data_aware
from rgp_keras.errors import InputTypeError, InputValueError, MissingDependencyError
from rgp_keras.masking.masks import prunable_kernel
from rgp_keras.masking.selection import select, skip_reason
from rgp_keras.masking.summary import warn_if_short
from rgp_keras.model_graph import leaves, paired_leaves

_INSTALL = "pip install 'tensorflow-model-optimization==0.8.1' 'tf_keras~=2.21.0'"


@functools.cache
def _api():
    """(tf_keras, PruneRegularGraph), imported on first use with a hint when the packages are missing."""
    try:
        import tf_keras

        from rgp_keras.tfmot.layers import PruneRegularGraph
    except ImportError as error:
        raise MissingDependencyError(f"The tf_keras path needs tf_keras and TF-MOT ({error}); install them: {_INSTALL}") from None
    return tf_keras, PruneRegularGraph


def _is_tfmot_wrapper(layer):
    return any(cls.__name__ == "PruneLowMagnitude" for cls in type(layer).__mro__)


def tf_keras_skip_reason(layer, graph):
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
    to_prune, graph, *, self_loops, skip_first, skip_last, layers, calibration_data, calibration_samples,
    calibration_mixes, assign_channels
):
    """The tf_keras side of `rgp_keras.prune_regular_graph` (same arguments, graph resolved)."""
    tf_keras, PruneRegularGraph = _api()
    if not isinstance(to_prune, tf_keras.Model):
        if _is_tfmot_wrapper(to_prune):
            raise InputValueError(f"Layer {to_prune.name!r} is already pruned: {tf_keras_skip_reason(to_prune, graph)}.")
        reason = tf_keras_skip_reason(to_prune, None)
        if reason:
            raise InputValueError(f"Layer {to_prune.name!r} cannot be pruned by RGP: {reason}.")
        return PruneRegularGraph(to_prune, graph, self_loops=self_loops)
    _check_model(to_prune, tf_keras)
    walked = list(leaves(to_prune))
    if layers is None and not any(tf_keras_skip_reason(layer, None) is None for layer in walked) and any(map(_is_tfmot_wrapper, walked)):
        raise InputValueError(
            f"Model {to_prune.name!r} is already pruned by TF-MOT's prune_low_magnitude on every prunable "
            "layer; apply RGP to the original model, or strip it first (tfmot.sparsity.keras.strip_pruning)."
        )
    selected = select(to_prune, graph, layers, skip_first, skip_last, reason_of=tf_keras_skip_reason)
    plan = data_aware.plan(to_prune, graph, selected, self_loops, calibration_data, calibration_samples,
                           calibration_mixes, assign_channels)

    def wrap(layer):
        clone = _clone(layer, wrap, tf_keras)
        if id(layer) in selected:
            return PruneRegularGraph(clone, graph, self_loops=self_loops)
        return clone

    pruned = tf_keras.models.clone_model(to_prune, clone_function=wrap)
    pairs = list(paired_leaves(to_prune, pruned))
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
        for original, new in paired_leaves(to_prune, reference):
            new.set_weights(plan.weights.get(id(original)) or original.get_weights())
    data_aware.finish(plan, reference, pruned, pairs)
    warn_if_short(pruned)
    return pruned


def strip_pruning(model):
    """tf_keras side of `rgp_keras.strip_pruning`: RGP and TF-MOT wrappers removed, weights * masks."""
    tf_keras, _ = _api()
    _check_model(model, tf_keras)

    def unwrap(layer):
        if _is_tfmot_wrapper(layer):
            return _clone(layer.layer, unwrap, tf_keras)
        return _clone(layer, unwrap, tf_keras)

    stripped = tf_keras.models.clone_model(model, clone_function=unwrap)
    for original, new in paired_leaves(model, stripped):
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
        raise InputTypeError(
            f"`model` must be a tf_keras Model for the TF-MOT path, got {type(model).__name__}; "
            "Keras 3 models go through rgp_keras.prune_regular_graph / strip_pruning directly."
        )
    if not (isinstance(model, tf_keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise InputTypeError(
            f"{type(model).__name__} is a subclassed tf_keras model, which cannot be cloned layer by layer; "
            "wrap its layers instead: `rgp_keras.prune_regular_graph(tf_keras.layers.Conv2D(...), degree=8)`."
        )
    if not model.built:
        raise InputValueError(f"Model {model.name!r} is not built: give it an Input so that kernel shapes are known.")

