"""The tf_keras (Keras 2) side of the pruning pipeline, through TF-MOT: `TfKeras`.

`rgp_keras.prune` runs one pipeline (select, plan, clone and wrap, copy
weights, mask, reconstruct; strip) for both frameworks; this module holds what
differs for tf_keras: TF-MOT's wrapper class (`PruneRegularGraph`, in
`rgp_keras.tfmot.layers`), tf_keras cloning and variable-by-variable weight
copies. `rgp_keras` loads it only when a tf_keras model is passed.
"""

import functools

from rgp_keras.errors import InputTypeError, InputValueError, MissingDependencyError
from rgp_keras.masking.masks import prunable_kernel
from rgp_keras.masking.selection import skip_reason
from rgp_keras.model_walk import leaves

_INSTALL = "pip install 'tensorflow-model-optimization==0.8.1' 'tf_keras~=2.21.0'"


@functools.cache
def _api():
    """(tf_keras, PruneRegularGraph), imported on first use with a hint when the packages are missing."""
    try:
        import tf_keras

        from rgp_keras.tfmot.layers import PruneRegularGraph
    except ImportError as error:
        raise MissingDependencyError(
            f"The tf_keras path needs tf_keras and TF-MOT ({error}); install them: {_INSTALL}"
        ) from None
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


class TfKeras:
    """The tf_keras side of `rgp_keras.prune`'s pipeline: TF-MOT wrappers, tf_keras cloning and weight copies."""

    skip_reason = staticmethod(tf_keras_skip_reason)

    def __init__(self):
        self.tf_keras, self.wrapper_class = _api()

    def check_model(self, model, layers):
        _check_tf_keras_model(model, self.tf_keras)
        walked = list(leaves(model))
        if (
            layers is None
            and not any(tf_keras_skip_reason(layer, None) is None for layer in walked)
            and any(map(_is_tfmot_wrapper, walked))
        ):
            raise InputValueError(
                f"Model {model.name!r} is already pruned by TF-MOT's prune_low_magnitude on every prunable "
                "layer; apply RGP to the original model, or strip it first (tfmot.sparsity.keras.strip_pruning)."
            )

    def check_strippable(self, model):
        _check_tf_keras_model(model, self.tf_keras)

    def clone_model(self, model, clone_function):
        return self.tf_keras.models.clone_model(model, clone_function=clone_function)

    def clone_layer(self, layer, clone_function):
        if isinstance(layer, self.tf_keras.Model):
            return self.tf_keras.models.clone_model(layer, clone_function=clone_function)
        return layer.__class__.from_config(layer.get_config())

    def wrap(self, layer, graph, self_loops):
        return self.wrapper_class(layer, graph, self_loops=self_loops)

    def wrap_layer(self, layer, graph, self_loops):
        if _is_tfmot_wrapper(layer):
            raise InputValueError(f"Layer {layer.name!r} is already pruned: {tf_keras_skip_reason(layer, graph)}.")
        reason = tf_keras_skip_reason(layer, None)
        if reason:
            raise InputValueError(f"Layer {layer.name!r} cannot be pruned by RGP: {reason}.")
        return self.wrap(layer, graph, self_loops)

    @staticmethod
    def copy_weights(source, target):
        # assigned variable by variable: set_weights would follow `weights`' order, which TF-MOT's wrapper changes
        if len(source.weights) != len(target.weights):
            raise AssertionError(f"cloning changed the variables of layer {source.name!r}")
        for old, new in zip(source.weights, target.weights):
            new.assign(old)

    @staticmethod
    def apply_mask(wrapper):
        for weight, mask, _ in wrapper.pruning_vars:
            weight.assign(weight * mask)

    @staticmethod
    def unwrapped(layer):
        """RGP's and TF-MOT's own wrappers alike are removed."""
        return layer.layer if _is_tfmot_wrapper(layer) else layer

    def copy_stripped_weights(self, original, new):
        if not _is_tfmot_wrapper(original):
            return self.copy_weights(original, new)
        self.copy_weights(original.layer, new)
        masks = {id(weight): mask for weight, mask, _ in original.pruning_vars}
        for old, fresh in zip(original.layer.weights, new.weights):
            if id(old) in masks:
                fresh.assign(old * masks[id(old)])


def _check_tf_keras_model(model, tf_keras):
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
