"""Model-level RGP: prune_regular_graph, strip_pruning (Keras 3; tf_keras via the TF-MOT adapter), reinitialize."""

import os

import keras
import numpy as np
from keras.src.models.functional import Functional

from rgp_keras import data_aware
from rgp_keras._checks import check_int
from rgp_keras.graph import RegularGraph, degree_for_sparsity, optimize
from rgp_keras.masks import kernel_channels, prunable_kernel
from rgp_keras.model_graph import leaves, variable_index
from rgp_keras.wrapper import INITIALIZER_OF, RegularGraphPruning


def prune_regular_graph(
    to_prune,
    *,
    sparsity=None,
    degree=None,
    graph=None,
    nodes=64,
    self_loops=False,
    skip_first=True,
    skip_last=True,
    layers=None,
    seed=None,
    calibration_data=None,
    calibration_samples=None,
    assign_channels=True,
):
    """Apply one regular-graph mask to every prunable layer of a Keras 3 model (or to one layer).

    Returns a new model: the original and its weights are untouched. Trained
    weights are copied (masked entries zeroed), so one-shot pruning of a trained
    model followed by `fit` works, as does training from scratch (see
    `reinitialize`).

    Pruning a trained model is data-aware by default: hidden channels are first
    permuted (the dense model's function is unchanged) so that the mask keeps
    the most important weights (`assign_channels`), and with `calibration_data`
    every masked layer's kept weights are then refit by least squares to
    reproduce the dense model's layer outputs, and BatchNormalization
    statistics downstream are re-measured. `pruning_summary` reports what each
    step did per layer.

    Args:
        to_prune: a built Keras 3 `Sequential` or functional `Model` (nested
            models included), or a single layer to wrap inside a model definition.
            tf_keras models and layers are accepted too: they get TF-MOT
            `PruneLowMagnitude` subclasses with the same masks (see
            `rgp_keras.tfmot_adapter`).
        sparsity: fraction of weights to prune; the nearest valid degree on
            `nodes` nodes is used (read `graph.sparsity` for the one achieved).
        degree: graph degree k; each masked layer keeps k / `nodes` of its weights.
        graph: a `RegularGraph` or the path of a graph file from `rgp graph`.
        nodes: graph nodes n (channel groups per layer) with sparsity/degree.
        self_loops: also keep group i -> group i (density (k + 1) / n).
        skip_first, skip_last: keep the first / last prunable layer dense, as in
            the paper (ignored when `layers` selects explicitly).
        layers: which layers to mask: names, layer classes, or a predicate
            `f(layer) -> bool` (or a list mixing them). Default: every layer
            RGP can mask.
        seed: seed of the graph generation and optimisation.
        calibration_data: unlabelled model inputs for reconstruction (a few
            hundred samples is typical): a numpy array (a list or dict of
            arrays for several inputs), a `tf.data.Dataset` or a generator of
            batches; `(x, y)` elements are accepted, labels are ignored.
        calibration_samples: use at most this many calibration samples
            (default: all of an array; datasets and generators are read until
            exhausted or 2048 samples).
        assign_channels: permute hidden channels to keep the most important
            weights (importance w^2, times the input channel's mean square
            with calibration data). False keeps the channel order.

    Exactly one of `sparsity`, `degree`, `graph` must be given. Without `graph`,
    a random regular graph is generated and optimised for minimum ASPL.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
    ...                           keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
    >>> pruned = prune_regular_graph(model, sparsity=0.875, nodes=64, skip_first=False, seed=0)
    >>> [type(layer).__name__ for layer in pruned.layers]
    ['RegularGraphPruning', 'RegularGraphPruning', 'Dense']
    """
    if calibration_data is not None and not isinstance(getattr(to_prune, "layers", None), list):
        raise ValueError(
            f"`calibration_data` needs a model, got the layer {getattr(to_prune, 'name', to_prune)!r}: reconstruction "
            "refits masked layers to reproduce the dense model's outputs. Prune the model that holds the layer "
            "(select it with `layers=`), or wrap the layer without calibration data."
        )
    graph = resolve_graph(sparsity=sparsity, degree=degree, graph=graph, nodes=nodes, seed=seed)
    if is_tf_keras(to_prune):
        from rgp_keras import tfmot_adapter

        return tfmot_adapter.prune_regular_graph(
            to_prune, graph, self_loops=self_loops, skip_first=skip_first, skip_last=skip_last, layers=layers,
            calibration_data=calibration_data, calibration_samples=calibration_samples,
            assign_channels=assign_channels,
        )
    if not isinstance(to_prune, keras.Model):
        if not isinstance(to_prune, keras.layers.Layer):
            raise TypeError(
                f"`to_prune` must be a Keras 3 Sequential or functional Model, or a layer; "
                f"got {type(to_prune).__name__}."
            )
        if isinstance(to_prune, RegularGraphPruning):
            raise ValueError(f"Layer {to_prune.name!r} is already pruned by rgp_keras.")
        return RegularGraphPruning(to_prune, graph, self_loops=self_loops)
    _check_model(to_prune)
    selected = _select(to_prune, graph, layers, skip_first, skip_last)
    plan = data_aware.plan(to_prune, graph, selected, self_loops, calibration_data, calibration_samples, assign_channels)

    def wrap(layer):
        clone = _clone_layer(layer)
        if id(layer) in selected:
            return RegularGraphPruning(clone, graph, self_loops=self_loops)
        return clone

    pruned = _clone_model(to_prune, wrap)
    pairs = list(_paired_leaves(to_prune, pruned))
    for original, new in pairs:
        target = new.layer if isinstance(new, RegularGraphPruning) else new
        target.set_weights(plan.weights.get(id(original)) or original.get_weights())
        if isinstance(new, RegularGraphPruning):
            new.kernel.assign(new.masked_kernel())
    reference = with_weights(to_prune, plan.weights) if plan.arrays is not None and plan.weights else to_prune
    data_aware.finish(plan, reference, pruned, pairs)
    return pruned


def with_weights(model, weights):
    """A clone of Keras 3 `model` whose layers take `weights[id(layer)]` (new weight lists) where given."""
    clone = _clone_model(model, _clone_layer)
    for original, new in _paired_leaves(model, clone):
        new.set_weights(weights.get(id(original)) or original.get_weights())
    return clone


def strip_pruning(model):
    """An ordinary Keras model with the original layer classes and names, masked weights 0.0.

    Its outputs equal the pruned model's; `model` itself is left as it is.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(64),
    ...                           keras.layers.Dense(4)])
    >>> stripped = strip_pruning(prune_regular_graph(model, degree=4, nodes=16, seed=0))
    >>> [type(layer).__name__ for layer in stripped.layers]
    ['Dense', 'Dense', 'Dense']
    """
    if is_tf_keras(model):
        from rgp_keras import tfmot_adapter

        return tfmot_adapter.strip_pruning(model)
    if isinstance(model, RegularGraphPruning):
        raise TypeError("strip_pruning takes a model; for a single wrapper use `wrapper.layer` and `wrapper.masked_kernel()`.")
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras 3 model, got {type(model).__name__}.")
    _check_model(model, pruned_ok=True)

    def unwrap(layer):
        return _clone_layer(layer.layer if isinstance(layer, RegularGraphPruning) else layer)

    stripped = _clone_model(model, unwrap)
    for original, new in _paired_leaves(model, stripped):
        if isinstance(original, RegularGraphPruning):
            weights = original.layer.get_weights()
            weights[variable_index(original.layer, original.kernel)] = keras.ops.convert_to_numpy(
                original.masked_kernel()
            )
        else:
            weights = original.get_weights()
        new.set_weights(weights)
    return stripped


def reinitialize(model, seed=None):
    """Density-aware re-initialisation of every masked kernel, for training from scratch.

    Each kernel is redrawn from its layer's own initializer and scaled by
    `1 / sqrt(density)`: fan-in (and fan-out) count only kept connections, so
    each unit's output variance matches that of the dense layer. Masked
    weights stay exactly zero. Modifies `model` in place and returns it.
    """
    _reject_other_keras(model, "reinitialize")
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    wrappers = [layer for layer in leaves(model) if isinstance(layer, RegularGraphPruning)]
    if not wrappers:
        raise ValueError("`model` has no RegularGraphPruning layers to re-initialise; prune it first.")
    for index, wrapper in enumerate(wrappers):
        initializer = getattr(wrapper.layer, INITIALIZER_OF[wrapper.kernel_attribute])
        config = keras.initializers.serialize(initializer)
        if seed is not None and "seed" in config.get("config", {}):
            config["config"]["seed"] = seed + index
        value = keras.initializers.deserialize(config)(wrapper.kernel.shape, dtype=wrapper.kernel.dtype)
        scale = 1.0 / np.sqrt(float(wrapper.density))
        wrapper.kernel.assign(keras.ops.multiply(value, wrapper.mask) * scale)
    return model


def resolve_graph(*, sparsity, degree, graph, nodes, seed):
    """The `RegularGraph` asked for by exactly one of sparsity / degree / graph."""
    given = {name: value for name, value in (("sparsity", sparsity), ("degree", degree), ("graph", graph)) if value is not None}
    if len(given) != 1:
        raise ValueError(
            "Pass exactly one of `sparsity`, `degree` or `graph`; got "
            + (", ".join(f"{name}={value!r}" for name, value in given.items()) or "none")
            + "."
        )
    if graph is not None:
        if isinstance(graph, (str, os.PathLike)):
            return RegularGraph.load(graph)
        if not isinstance(graph, RegularGraph):
            raise TypeError(f"`graph` must be a RegularGraph or a graph file path, got {type(graph).__name__}.")
        return graph
    nodes = check_int("nodes", nodes, minimum=3)
    if sparsity is not None:
        degree = degree_for_sparsity(nodes, sparsity)
    start = RegularGraph.random(nodes, degree, seed=seed)
    return optimize(start, seed=start.metadata["seed"]).graph


def is_tf_keras(obj):
    """Whether `obj` is a tf_keras (Keras 2) object, checked without importing tf_keras."""
    return any(cls.__module__.split(".")[0] == "tf_keras" for cls in type(obj).__mro__)


def _reject_other_keras(obj, helper):
    if is_tf_keras(obj):
        raise TypeError(
            f"{type(obj).__name__} is a tf_keras (Keras 2) object, but `{helper}` takes Keras 3 models only. "
            "tf_keras models go through the TF-MOT path: rgp_keras.prune_regular_graph, strip_pruning and "
            "pruning_summary accept them, then TF-MOT's own tools (see examples/tfmot_workflow.py)."
        )


def _check_model(model, pruned_ok=False):
    if not isinstance(model, (keras.Sequential, Functional)):
        raise TypeError(
            f"{type(model).__name__} is a subclassed model, which cannot be cloned layer by layer. "
            "Wrap its layers instead, in its __init__: "
            "`self.conv = rgp_keras.prune_regular_graph(keras.layers.Conv2D(...), degree=8)`."
        )
    if not model.built or not model.inputs:
        raise ValueError(
            f"Model {model.name!r} is not built: give it a `keras.Input(shape)` or call "
            "`model.build(input_shape)` before pruning, so that kernel shapes are known."
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            # clone_model re-creates nested Sequential/functional models layer by layer, but a subclassed one
            # only through its config: its weights and masks would be lost without a word.
            if not isinstance(layer, (keras.Sequential, Functional)):
                raise TypeError(
                    f"Model {model.name!r} contains the subclassed model {layer.name!r} "
                    f"({type(layer).__name__}), which cannot be cloned layer by layer, so its layers cannot be "
                    "pruned or copied safely. Rebuild that block as a Sequential or functional model, or wrap its "
                    "layers in its __init__: `self.conv = rgp_keras.prune_regular_graph(keras.layers.Conv2D(...), "
                    "degree=8)`."
                )
            _check_model(layer, pruned_ok=True)
    wrapped = [layer.name for layer in leaves(model) if isinstance(layer, RegularGraphPruning)]
    if wrapped and not pruned_ok:
        raise ValueError(
            f"Model {model.name!r} is already pruned by rgp_keras (layers {wrapped[:3]}); "
            "prune the original model, or strip this one first with rgp_keras.strip_pruning."
        )


def _matches(layer, selectors):
    for selector in selectors:
        if isinstance(selector, str) and layer.name == selector:
            return True
        if isinstance(selector, type) and isinstance(layer, selector):
            return True
        if callable(selector) and not isinstance(selector, (str, type)) and selector(layer):
            return True
    return False


def skip_reason(layer, graph):
    """Why `layer` cannot carry `graph`'s mask (`graph=None`: judge the layer type only), or None when it can."""
    attribute, reason = prunable_kernel(layer)
    if attribute is None:
        return reason
    if graph is None:
        return None
    channels = kernel_channels(getattr(layer, attribute).shape, reason)
    if min(channels) < graph.nodes:
        too_few = [f"{count} {side} channel{'' if count == 1 else 's'}"
                   for side, count in zip(("input", "output"), channels) if count < graph.nodes]
        return f"{' and '.join(too_few)}: fewer than the graph's {graph.nodes} nodes"
    return None


def _select(model, graph, layers, skip_first, skip_last, reason_of=skip_reason):
    """ids of the layers to wrap; raises when a layer named explicitly cannot be masked.

    `reason_of(layer, graph)` says why a layer cannot be masked (None: it can).
    """
    walked = list(leaves(model))
    if layers is None:
        candidates = [layer for layer in walked if reason_of(layer, None) is None]
        skipped = set()
        if candidates and skip_first:
            skipped.add(id(candidates[0]))
        if candidates and skip_last:
            skipped.add(id(candidates[-1]))
        chosen = [layer for layer in candidates if id(layer) not in skipped and reason_of(layer, graph) is None]
    else:
        selectors = layers if isinstance(layers, (list, tuple, set)) else [layers]
        names = {layer.name for layer in walked}
        unknown = [s for s in selectors if isinstance(s, str) and s not in names]
        if unknown:
            raise ValueError(f"No layer named {unknown} in model {model.name!r}; its layers are {sorted(names)}.")
        chosen = []
        for layer in walked:
            if not _matches(layer, selectors):
                continue
            reason = reason_of(layer, graph)
            if reason is None:
                chosen.append(layer)
            elif layer.name in selectors:
                raise ValueError(f"Layer {layer.name!r} cannot be pruned by RGP: {reason}.")
    if not chosen:
        widest = max(
            (min(kernel_channels(getattr(l, a).shape, lay)) for l in walked for a, lay in [prunable_kernel(l)] if a),
            default=0,
        )
        raise ValueError(
            f"No layer of model {model.name!r} can carry a {graph.nodes}-node graph: selected layers "
            f"have at most {widest} channels on their narrower side (each side needs >= {graph.nodes}), "
            "or none is prunable. Use fewer `nodes`, or select other `layers`."
        )
    return {id(layer) for layer in chosen}


def _clone_layer(layer):
    return layer.__class__.from_config(layer.get_config())


def _clone_model(model, clone_function):
    inputs = None
    if isinstance(model, Functional) and not isinstance(model, keras.Sequential):
        # clone_model would rename the inputs; keep the user's names.
        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(
                batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor._keras_history.operation.name
            ),
            model.input,
        )
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_function, recursive=True)


def _paired_leaves(original, clone):
    originals, clones = list(leaves(original)), list(leaves(clone))
    assert len(originals) == len(clones), "clone_model changed the layer structure"
    return zip(originals, clones)
