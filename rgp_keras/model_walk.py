"""Walking a functional or Sequential model (Keras 3 or tf_keras): its layer calls as data, leaves, cloning.

Channel assignment and reconstruction both need to know which layer call reads
and writes which tensor, and to run a model one layer call at a time. This
module gives them that, for Keras 3 and tf_keras alike, without importing
either: a model's top-level calls in topological order (`layer_calls`), each
naming its input and output tensors by id, and `run_call` to execute one call
on a batch of concrete values. Nested models appear as one call. Also the walking and
cloning helpers every module shares (`leaves`, `paired_leaves`, `clone_model`).
"""

from typing import NamedTuple

import numpy as np

from rgp_keras._keras_src import functional_class
from rgp_keras.errors import InputTypeError


class LayerCall(NamedTuple):
    """One call of a layer in a model's graph: its layer and the ids of the tensors it reads and writes."""

    layer: object
    inputs: tuple
    outputs: tuple
    keras_node: object


class LayerCalls(NamedTuple):
    """A model's calls in topological order, and the ids (and shapes) of its input and output tensors."""

    calls: list
    inputs: tuple
    outputs: tuple
    shapes: dict  # tensor id -> shape tuple (batch dimension None)


class Alias(NamedTuple):
    """Where `layer_calls(..., nested=True)` enters or leaves nested model `model`: values pass on as they are."""

    name: str
    model: object


def layer_calls(model, nested=False):
    """The `LayerCalls` of a built Keras 3 or tf_keras Sequential / functional model.

    With `nested`, a nested functional or Sequential model called once on one
    tensor is walked into: its calls appear in place of its own, between two
    calls of an `Alias` (its input passed to its first layers, its output back
    out), so each of its layers is a call of its own.

    Raises `TypeError` for models without a layer graph (subclassed models, or
    a Sequential model built without an `Input`).
    """
    network = getattr(model, "_functional", None) or model  # Keras 3 Sequential keeps its graph there
    keras_nodes_by_depth = getattr(network, "_nodes_by_depth", None)
    if not keras_nodes_by_depth:
        raise InputTypeError(
            f"Model {model.name!r} ({type(model).__name__}) has no layer graph to walk: data-aware pruning "
            "needs a Sequential model built with an Input, or a functional model."
        )
    calls, shapes = [], {}
    for depth in sorted(keras_nodes_by_depth, reverse=True):
        for keras_node in keras_nodes_by_depth[depth]:
            layer = getattr(keras_node, "operation", None) or getattr(keras_node, "layer", None)
            inputs = _flat_tensors(keras_node, "input")
            outputs = _flat_tensors(keras_node, "output")
            for tensor in (*inputs, *outputs):
                shapes[id(tensor)] = tuple(None if d is None else int(d) for d in tensor.shape)
            if not inputs:  # an InputLayer
                continue
            inner = _walkable(layer, inputs, outputs) if nested else None
            if inner is not None:
                calls.append(LayerCall(Alias(f"{layer.name}/input", layer), (id(inputs[0]),), inner.inputs, None))
                calls.extend(inner.calls)
                shapes.update(inner.shapes)
                calls.append(LayerCall(Alias(f"{layer.name}/output", layer), inner.outputs, (id(outputs[0]),), None))
                continue
            calls.append(LayerCall(layer, tuple(map(id, inputs)), tuple(map(id, outputs)), keras_node))
    return LayerCalls(calls, tuple(map(id, network.inputs)), tuple(map(id, network.outputs)), shapes)


def _walkable(layer, inputs, outputs):
    """The nested `LayerCalls` of `layer` when it is a graph model called once, on one tensor, giving one; else
    None (it stays one call)."""
    if not isinstance(getattr(layer, "layers", None), list) or len(inputs) != 1 or len(outputs) != 1:
        return None
    if len(getattr(layer, "_inbound_nodes", ())) != 1:
        return None
    try:
        inner = layer_calls(layer, nested=True)
    except InputTypeError:  # a subclassed model: no graph to walk
        return None
    return inner if len(inner.inputs) == 1 and len(inner.outputs) == 1 else None


def _flat_tensors(keras_node, side):
    if hasattr(keras_node, "operation"):  # Keras 3
        return list(keras_node.input_tensors if side == "input" else keras_node.outputs)
    import tensorflow as tf

    return list(tf.nest.flatten(keras_node.keras_inputs if side == "input" else keras_node.outputs))


def run_call(call, values):
    """Outputs (backend tensors, one per output tensor) of `call` on `values` (tensor id -> one batch of values).

    Runs as the model's own call does outside `fit` (inference mode, unless the model fixed `training`).
    """
    if isinstance(call.layer, Alias):
        return [values[key] for key in call.inputs]
    args, kwargs = _fill_in(call.keras_node, values)
    return _flatten(call.layer(*args, **kwargs))


def _fill_in(keras_node, values):
    if hasattr(keras_node, "operation"):  # Keras 3
        return keras_node.arguments.fill_in(values)
    import tensorflow as tf

    replace = lambda obj: values.get(id(obj), obj) if _is_symbolic(obj) else obj
    return tf.nest.map_structure(replace, keras_node.call_args), tf.nest.map_structure(replace, keras_node.call_kwargs)


def has_constant_tensors(call):
    """Whether a Keras 3 call takes arrays besides its symbolic inputs (`x * np.array(...)`: a constant that
    weights channels); plain numbers do not count."""
    arguments = getattr(call.keras_node, "arguments", None)
    if arguments is None:  # tf_keras: its merge layers take tensors only
        return False
    import keras

    return any(
        not _is_symbolic(value) and not isinstance(value, (bool, int, float, str, type(None))) and np.ndim(value) > 0
        for value in keras.tree.flatten((arguments.args, arguments.kwargs))
    )


def _is_symbolic(obj):
    return type(obj).__name__.endswith("KerasTensor")


def _flatten(outputs):
    if isinstance(outputs, dict):
        return [outputs[key] for key in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [item for output in outputs for item in _flatten(output)]
    return [outputs]


def to_numpy(value):
    """A numpy array of a tensor or variable (Keras 3 on any backend, or tf_keras).

    Eager tensors are viewed without a copy (`.numpy()` copies, which costs
    seconds on calibration-sized activations); variables are copied with
    `.numpy()`, which avoids numpy 2's `__array__` deprecation path.
    """
    if type(value).__name__ == "EagerTensor":
        return np.asarray(value)
    if type(value).__module__.startswith("keras.") and hasattr(value, "value"):  # a Keras 3 variable: its
        value = value.value  # backend value (on JAX, `Variable.numpy()` warns under numpy 2)
    if hasattr(value, "detach"):  # a torch tensor (Keras 3 on the torch backend)
        return value.detach().cpu().numpy()
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def leaves(model):
    """Layers in model order, descending into nested models; wrappers count as leaves.

    Nested models are recognised by their `layers` list, so Keras 3 and
    tf_keras models are walked alike.
    """
    for layer in model.layers:
        if isinstance(getattr(layer, "layers", None), list):
            yield from leaves(layer)
        else:
            yield layer


def variable_index(layer, variable):
    """Position of `variable` in `layer.weights` (the order of `get_weights`/`set_weights`)."""
    return next(i for i, weight in enumerate(layer.weights) if weight is variable)


def carries_masks(model):
    """Whether `model` (or a model nested in it) holds an RGP wrapper."""
    return any(is_rgp_wrapper(layer) for layer in leaves(model))


def is_rgp_wrapper(layer):
    """Whether `layer` is an RGP wrapper: Keras 3 `RegularGraphPruning` or the tf_keras `PruneRegularGraph`."""
    return hasattr(layer, "masked_kernel") and hasattr(layer, "graph")


def consumers(calls):
    """tensor id -> number of calls that read it (model outputs count once more)."""
    counts = {}
    for call in calls.calls:
        for key in call.inputs:
            counts[key] = counts.get(key, 0) + 1
    for key in calls.outputs:
        counts[key] = counts.get(key, 0) + 1
    return counts


def paired_leaves(original, clone):
    originals, clones = list(leaves(original)), list(leaves(clone))
    assert len(originals) == len(clones), "clone_model changed the layer structure"
    return zip(originals, clones)


def is_tf_keras(obj):
    """Whether `obj` is a tf_keras (Keras 2) object, checked without importing tf_keras."""
    return any(cls.__module__.split(".")[0] == "tf_keras" for cls in type(obj).__mro__)


def reject_tf_keras(obj, helper):
    """Raise for a tf_keras object given to a Keras-3-only `helper`, naming the TF-MOT path."""
    if is_tf_keras(obj):
        raise InputTypeError(
            f"{type(obj).__name__} is a tf_keras (Keras 2) object, but `{helper}` takes Keras 3 models only. "
            "tf_keras models go through the TF-MOT path: rgp_keras.prune_regular_graph, strip_pruning and "
            "pruning_summary accept them, then TF-MOT's own tools (see examples/tfmot_workflow.py)."
        )


def clone_layer(layer):
    """A new layer of the same class and config (weights not copied)."""
    return layer.__class__.from_config(layer.get_config())


def clone_model(model, clone_function, recursive=True):
    """`keras.models.clone_model` of a Keras 3 model, keeping a functional model's input names; not `recursive`:
    `clone_function` also gets the nested models."""
    import keras
    inputs = None
    if isinstance(model, functional_class()) and not isinstance(model, keras.Sequential):
        # clone_model would rename the inputs; keep the user's names.
        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(
                batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor._keras_history.operation.name
            ),
            model.input,
        )
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_function, recursive=recursive)
