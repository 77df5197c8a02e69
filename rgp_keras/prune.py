"""The pruning pipeline: prune_regular_graph, strip_pruning, reinitialize.

One pipeline for both frameworks (select, plan, clone and wrap, copy weights,
mask, reconstruct; strip), over a small adapter: `_Keras3` here, `TfKeras` in
`rgp_keras.tfmot.adapter` for tf_keras models (loaded only for them).
"""

import os

import keras
import numpy as np

from rgp_keras import data_aware
from rgp_keras._checks import check_fraction, check_int
from rgp_keras._keras_src import is_rebuildable
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.graph import RegularGraph, degree_for_sparsity, optimize, warn_if_sparsity_differs
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.masking.selection import auto_nodes, select, skip_reason, wanted
from rgp_keras.masking.summary import pruning_summary, warn_if_no_faster, warn_if_short
from rgp_keras.masking.wrapper import RegularGraphPruning
from rgp_keras.model_walk import (
    clone_layer,
    clone_model,
    is_tf_keras,
    leaves,
    paired_leaves,
    reject_tf_keras,
    to_numpy,
    variable_index,
)


def prune_regular_graph(
    to_prune,
    *,
    sparsity=None,
    degree=None,
    graph=None,
    nodes="auto",
    self_loops=False,
    skip_first=True,
    skip_last=True,
    layers=None,
    seed=None,
    calibration_data=None,
    calibration_samples=None,
    calibration_mixes="auto",
    calibration_batch_size=None,
    assign_channels=True,
    graph_candidates=1,
    verbose="auto",
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
            `rgp_keras.tfmot.adapter`).
        sparsity: fraction of each masked layer's weights to prune; with an
            explicit `nodes`, the nearest valid degree on that many nodes is
            used (read `graph.sparsity` for the one achieved). A warning says
            when the graph prunes more than 2 points away from `sparsity`, and
            names the `nodes` that give it exactly.
        degree: graph degree k; each masked layer keeps k / `nodes` of its weights.
        graph: a `RegularGraph` or the path of a graph file from `rgp graph`
            (then `nodes` must stay "auto": the graph has its own).
        nodes: graph nodes n (channel groups per layer), or "auto" (default).
            With `sparsity`, "auto" picks the largest n <= 64 that gives the
            density 1 - sparsity exactly and splits the layers holding 90 % of
            the selected MACs into groups at least 16 channels wide (fast
            grouped kernels in LiteRT), else 8, 4, 2 or 1 channel wide; with
            `degree`, "auto" means 64. When layers narrower than the graph stay
            dense and so the model is pruned much less than asked, a warning
            names them and the `nodes` that would prune them.
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
        calibration_mixes: reconstruction also fits on this many convex mixes
            of pairs of calibration samples (mixup of the inputs; the dense
            model gives their targets), which helps least-squares fits short
            of rows, such as Dense layers with one row per sample. "auto"
            (default): when a masked layer has fewer than 32 rows per weight
            to fit (Dense layers; convolutions have a row per position), up to
            8x the samples in all while the set holds at most 2**23 input
            values (3584 mixes for 512 28x28 images; none for 224x224 ones),
            its forward pass costs at most 2**33 MACs (each mix runs through
            both models: an MLP gets them, a Dense after convolutions
            usually not) and every input is floating-point; 0: none.
        calibration_batch_size: samples that run through the model together.
            Every statistic is summed batch by batch and datasets and
            generators are read once and kept on disk beyond 256 MB, so memory
            is bounded by a batch, not by the number of samples. Default:
            as many as keep a batch of the model's largest activation within
            128 MB (27 images for MobileNetV2 at 224x224).
        assign_channels: permute hidden channels to keep the most important
            weights (importance w^2, times the input channel's mean square
            with calibration data). False keeps the channel order.
        graph_candidates: with calibration data and a generated graph, prune
            with this many minimum-ASPL graphs (seeds `seed`, `seed` + 1, ...)
            and keep the model whose outputs on the calibration samples are
            closest to the dense model's. Graphs of equal ASPL keep different
            amounts of accuracy, and this error picks the better ones (what it
            gained: docs/data-aware.md); each candidate costs one more
            pruning. Default 1.
        verbose: "auto" (default): a progress bar over the layers while
            refitting when 16 or more layers are masked; 1: always; 0: none.

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
        raise InputValueError(
            f"`calibration_data` needs a model, got the layer {getattr(to_prune, 'name', to_prune)!r}: reconstruction "
            "refits masked layers to reproduce the dense model's outputs. Prune the model that holds the layer "
            "(select it with `layers=`), or wrap the layer without calibration data."
        )
    _check_graph_arguments(sparsity, degree, graph, nodes)
    if sparsity is not None:  # the degree for it, said when it is far from what was asked
        if nodes == "auto":
            nodes, degree = _auto_nodes(to_prune, sparsity, self_loops, layers, skip_first, skip_last)
        else:
            nodes = check_int("nodes", nodes, minimum=3)
            degree = degree_for_sparsity(nodes, sparsity, self_loops)
        warn_if_sparsity_differs(sparsity, nodes, degree, self_loops)
    options = dict(self_loops=self_loops, skip_first=skip_first, skip_last=skip_last, layers=layers,
                   calibration_data=calibration_data, calibration_samples=calibration_samples,
                   calibration_mixes=calibration_mixes, calibration_batch_size=calibration_batch_size,
                   assign_channels=assign_channels, verbose=verbose)
    if check_int("graph_candidates", graph_candidates, minimum=1) > 1:
        if graph is not None:
            raise InputValueError(
                "`graph_candidates` picks among generated graphs, and an explicit `graph` leaves nothing to pick; "
                "pass `sparsity` or `degree` instead, or graph_candidates=1."
            )
        return _best_of_graphs(to_prune, degree, nodes, seed, graph_candidates, options)
    graph = _graph_for(degree, graph, nodes, seed)
    framework = _framework_of(to_prune)
    if not isinstance(getattr(to_prune, "layers", None), list):
        return framework.wrap_layer(to_prune, graph, self_loops)
    return _prune_model(framework, to_prune, graph, **options)


def _best_of_graphs(model, degree, nodes, seed, candidates, options):
    """`model` pruned with each of `candidates` generated graphs; the one closest to it on the calibration data."""
    if options["calibration_data"] is None:
        raise InputValueError("`graph_candidates` needs `calibration_data`: the candidates are judged on it.")
    calibration = data_aware.checked_calibration(model, options["calibration_data"], options["calibration_samples"],
                                                 options["calibration_batch_size"])
    options = {**options, "calibration_data": calibration, "calibration_samples": None,
               "calibration_batch_size": None}
    graphs = (_graph_for(degree, None, nodes, None if seed is None else seed + i) for i in range(candidates))
    return data_aware.best_of(model, calibration, (lambda g=g: prune_regular_graph(model, graph=g, **options)
                                              for g in graphs))


def _prune_model(framework, model, graph, *, self_loops, skip_first, skip_last, layers, calibration_data,
                 calibration_samples, calibration_mixes, calibration_batch_size, assign_channels, verbose):
    """The pipeline, one for both frameworks: select, plan, clone and wrap, copy weights, mask, reconstruct."""
    framework.check_model(model, layers)
    selected = select(model, graph, layers, skip_first, skip_last, reason_of=framework.skip_reason)
    plan = data_aware.plan(model, graph, selected, self_loops=self_loops, calibration_data=calibration_data,
                           calibration_samples=calibration_samples, calibration_mixes=calibration_mixes,
                           calibration_batch_size=calibration_batch_size, assign_channels=assign_channels,
                           verbose=verbose)

    def wrap(layer):
        clone = framework.clone_layer(layer, wrap)
        return framework.wrap(clone, graph, self_loops) if id(layer) in selected else clone

    pruned = framework.clone_model(model, wrap)
    pairs = list(paired_leaves(model, pruned))
    for original, new in pairs:
        wrapped = id(original) in selected
        target = new.layer if wrapped else new
        if id(original) in plan.weights:
            target.set_weights(plan.weights[id(original)])
        else:
            framework.copy_weights(original, target)
        if hasattr(original, "pruned_channels"):  # thinned by prune_channels: the summary counts both reductions
            target.pruned_channels = original.pruned_channels
        if wrapped:
            framework.apply_mask(new)
    reference = model
    if plan.calibration_data is not None and plan.weights:
        reference = with_weights(model, plan.weights, framework)
    data_aware.finish(plan, reference, pruned, pairs)
    summary = pruning_summary(pruned)
    warn_if_short(summary)
    warn_if_no_faster(pruned, summary)
    return pruned


def with_weights(model, weights, framework=None):
    """A clone of `model` whose layers take `weights[id(layer)]` (new weight lists) where given."""
    framework = framework or _framework_of(model)

    def clone(layer):
        return framework.clone_layer(layer, clone)

    copy = framework.clone_model(model, clone)
    for original, new in paired_leaves(model, copy):
        new.set_weights(weights.get(id(original)) or original.get_weights())
    return copy


def strip_pruning(model):
    """An ordinary Keras model with the original layer classes and names, masked weights 0.0.

    Its outputs equal the pruned model's; `model` itself is left as it is.
    tf_keras models lose TF-MOT's wrappers too (their weights times their masks).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(64),
    ...                           keras.layers.Dense(4)])
    >>> stripped = strip_pruning(prune_regular_graph(model, degree=4, nodes=16, seed=0))
    >>> [type(layer).__name__ for layer in stripped.layers]
    ['Dense', 'Dense', 'Dense']
    """
    framework = _framework_of(model)
    framework.check_strippable(model)

    def unwrap(layer):
        return framework.clone_layer(framework.unwrapped(layer), unwrap)

    stripped = framework.clone_model(model, unwrap)
    for original, new in paired_leaves(model, stripped):
        framework.copy_stripped_weights(original, new)
    return stripped


def reinitialize(model, seed=None):
    """Density-aware re-initialisation of every masked kernel, for training from scratch.

    Each kernel is redrawn from its layer's own initializer and scaled by
    `1 / sqrt(density)`: fan-in (and fan-out) count only kept connections, so
    each unit's output variance matches that of the dense layer. Masked
    weights stay exactly zero. Modifies `model` in place and returns it.
    """
    reject_tf_keras(model, "reinitialize")
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    wrappers = [layer for layer in leaves(model) if isinstance(layer, RegularGraphPruning)]
    if not wrappers:
        raise InputValueError("`model` has no RegularGraphPruning layers to re-initialise; prune it first.")
    for index, wrapper in enumerate(wrappers):
        initializer = getattr(wrapper.layer, layer_type(wrapper.layer)[1].initializer)
        config = keras.initializers.serialize(initializer)
        if seed is not None and "seed" in config.get("config", {}):
            config["config"]["seed"] = seed + index
        value = keras.initializers.deserialize(config)(wrapper.kernel.shape, dtype=wrapper.kernel.dtype)
        scale = 1.0 / np.sqrt(float(wrapper.density))
        wrapper.kernel.assign(keras.ops.multiply(value, wrapper.mask) * scale)
    return model


def _graph_for(degree, graph, nodes, seed):
    """The `RegularGraph` asked for by checked arguments: `graph` itself or its file, else a generated
    `degree`-regular graph on `nodes` nodes ("auto": 64) optimised for minimum ASPL."""
    if graph is not None:
        if isinstance(graph, (str, os.PathLike)):
            return RegularGraph.load(graph)
        if not isinstance(graph, RegularGraph):
            raise InputTypeError(f"`graph` must be a RegularGraph or a graph file path, got {type(graph).__name__}.")
        return graph
    nodes = 64 if nodes == "auto" else check_int("nodes", nodes, minimum=3)
    start = RegularGraph.random(nodes, degree, seed=seed)
    return optimize(start, seed=start.metadata["seed"]).graph


def _check_graph_arguments(sparsity, degree, graph, nodes):
    """Exactly one of sparsity / degree / graph, and `nodes` an int or "auto" (and "auto" with a graph)."""
    asked = (("sparsity", sparsity), ("degree", degree), ("graph", graph))
    given = {name: value for name, value in asked if value is not None}
    if len(given) != 1:
        raise InputValueError(
            "Pass exactly one of `sparsity`, `degree` or `graph`; got "
            + (", ".join(f"{name}={value!r}" for name, value in given.items()) or "none")
            + "."
        )
    if isinstance(nodes, str) and nodes != "auto":
        raise InputValueError(f"`nodes` must be an integer >= 3 or 'auto', got {nodes!r}.")
    if graph is not None and nodes != "auto":
        raise InputValueError(
            f"`nodes`={nodes!r} conflicts with `graph`, which has its own node count; pass one of them."
        )


def _auto_nodes(to_prune, sparsity, self_loops, layers, skip_first, skip_last):
    """(nodes, degree) for nodes="auto", for a model (its selected layers) or a single layer."""
    check_fraction("sparsity", sparsity)
    if isinstance(getattr(to_prune, "layers", None), list) and getattr(to_prune, "built", False):
        reason_of = _framework_of(to_prune).skip_reason
        candidates = [layer for layer, _ in wanted(to_prune, layers, skip_first, skip_last, reason_of)]
        return auto_nodes([layer for layer in candidates if reason_of(layer, None) is None], sparsity, self_loops)
    return auto_nodes([to_prune] if getattr(to_prune, "built", False) else [], sparsity, self_loops)


def _check_model(model, pruned_ok=False):
    if not is_rebuildable(model):
        raise InputTypeError(
            f"{type(model).__name__} is a subclassed model, which cannot be cloned layer by layer. "
            "Wrap its layers instead, in its __init__: "
            "`self.conv = rgp_keras.prune_regular_graph(keras.layers.Conv2D(...), degree=8)`."
        )
    if not model.built or not model.inputs:
        raise InputValueError(
            f"Model {model.name!r} is not built: give it a `keras.Input(shape)` or call "
            "`model.build(input_shape)` before pruning, so that kernel shapes are known."
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            # clone_model re-creates nested Sequential/functional models layer by layer, but a subclassed one
            # only through its config: its weights and masks would be lost without a word.
            if not is_rebuildable(layer):
                raise InputTypeError(
                    f"Model {model.name!r} contains the subclassed model {layer.name!r} "
                    f"({type(layer).__name__}), which cannot be cloned layer by layer, so its layers cannot be "
                    "pruned or copied safely. Rebuild that block as a Sequential or functional model, or wrap its "
                    "layers in its __init__: `self.conv = rgp_keras.prune_regular_graph(keras.layers.Conv2D(...), "
                    "degree=8)`."
                )
            _check_model(layer, pruned_ok=True)
    wrapped = [layer.name for layer in leaves(model) if isinstance(layer, RegularGraphPruning)]
    if wrapped and not pruned_ok:
        raise InputValueError(
            f"Model {model.name!r} is already pruned by rgp_keras (layers {wrapped[:3]}); "
            "prune the original model, or strip this one first with rgp_keras.strip_pruning."
        )


class _Keras3:
    """The Keras 3 side of the pruning pipeline; the tf_keras side is `rgp_keras.tfmot.adapter.TfKeras`."""

    skip_reason = staticmethod(skip_reason)
    clone_model = staticmethod(clone_model)

    @staticmethod
    def check_model(model, layers):
        _check_model(model)

    @staticmethod
    def check_strippable(model):
        if isinstance(model, RegularGraphPruning):
            raise InputTypeError(
                "strip_pruning takes a model; for a single wrapper use `wrapper.layer` and `wrapper.masked_kernel()`."
            )
        if not isinstance(model, keras.Model):
            raise InputTypeError(f"`model` must be a Keras 3 model, got {type(model).__name__}.")
        if not is_rebuildable(model) and any(isinstance(layer, RegularGraphPruning) for layer in leaves(model)):
            raise InputTypeError(
                f"strip_pruning rebuilds a model layer by layer, which the subclassed model {model.name!r} "
                f"({type(model).__name__}) does not allow, so its RGP wrappers cannot be swapped for plain layers. "
                "Its masked weights are already exactly zero: export it as it is with "
                "`rgp_keras.export_tflite(model, path, compact=False)`, or build the architecture as a Sequential "
                "or functional model to strip it and get compact kernels."
            )
        _check_model(model, pruned_ok=True)

    @staticmethod
    def clone_layer(layer, clone_function):
        return clone_layer(layer)  # Keras's clone_model(recursive=True) descends into nested models itself

    @staticmethod
    def wrap(layer, graph, self_loops):
        return RegularGraphPruning(layer, graph, self_loops=self_loops)

    @staticmethod
    def wrap_layer(layer, graph, self_loops):
        if not isinstance(layer, keras.layers.Layer):
            raise InputTypeError(
                f"`to_prune` must be a Keras 3 Sequential or functional Model, or a layer; got {type(layer).__name__}."
            )
        if isinstance(layer, RegularGraphPruning):
            raise InputValueError(f"Layer {layer.name!r} is already pruned by rgp_keras.")
        return RegularGraphPruning(layer, graph, self_loops=self_loops)

    @staticmethod
    def copy_weights(source, target):
        target.set_weights(source.get_weights())

    @staticmethod
    def apply_mask(wrapper):
        wrapper.kernel.assign(wrapper.masked_kernel())

    @staticmethod
    def unwrapped(layer):
        return layer.layer if isinstance(layer, RegularGraphPruning) else layer

    @staticmethod
    def copy_stripped_weights(original, new):
        if isinstance(original, RegularGraphPruning):
            weights = original.layer.get_weights()
            weights[variable_index(original.layer, original.kernel)] = to_numpy(original.masked_kernel())
        else:
            weights = original.get_weights()
        new.set_weights(weights)


def _framework_of(obj):
    """The side of the pipeline for `obj`: tf_keras (through TF-MOT, imported on first use) or Keras 3."""
    if is_tf_keras(obj):
        from rgp_keras.tfmot.adapter import TfKeras

        return TfKeras()
    return _Keras3
