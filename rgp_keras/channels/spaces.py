"""Channel spaces: which channels of a model's tensors must be dropped, kept or reordered together.

A kernel layer (Dense, Conv, SeparableConv) starts a channel space with its
output channels. Layers that act on each channel on their own
(BatchNormalization, depthwise convolutions, activations, pooling, ...) carry
it through; element-wise merges (residual `Add`, `Multiply`, ...) join their
inputs' spaces into one; `Concatenate` lays several spaces side by side, and
`Flatten` repeats one per position. Every tensor so has a *layout*: the runs
of channels of the spaces it holds, in order. Choosing which channels of each
space to keep (or in which order) then fixes every weight: the producers'
output axes, the channel-wise layers' weights and the consumers' input axes.
Spaces that reach a model input or output, or a layer this walk cannot follow,
are frozen (their channels stay as they are) and say why.

Channel assignment permutes the channels of spaces, the width axis
(`prune_channels`) keeps a subset of them: both read the model here.
"""

import math
from typing import NamedTuple

import numpy as np

from rgp_keras.masking.layer_types import layer_type
from rgp_keras.model_walk import Alias, has_constant_tensors, layer_calls, variable_index


class Segment(NamedTuple):
    """A run of all the channels of space `space`, in the space's order."""

    space: int
    width: int


class ChannelSpaces:
    """The channel spaces of a model's `LayerCalls` (`calls`), found by one walk over them in topological order.

    Attributes:
        calls: the `LayerCalls` walked.
        roles: per call (same order), what it does to channels (`role_of`); None: a call the walk cannot follow,
            whose spaces are frozen.
        layouts: tensor id -> tuple of `Segment`s.
    """

    def __init__(self, calls):
        self.calls = calls
        self.parent, self.widths, self.reasons = [], [], {}
        self.layouts, self.roles = {}, []
        for key in calls.inputs:
            self.layouts[key] = self._new(calls.shapes[key][-1], "a model input")
        times_called = {}
        for call in calls.calls:
            times_called[id(call.layer)] = times_called.get(id(call.layer), 0) + 1
        for call in calls.calls:
            role = role_of(call, calls.shapes)
            if role is not None and times_called[id(call.layer)] > 1:
                role = None
            self.roles.append(role)
            self._follow(call, role, times_called[id(call.layer)])
        for key in calls.outputs:
            for segment in self.layouts[key]:
                self.freeze(segment.space, "a model output")

    def _new(self, width, frozen=None):
        """The layout of a tensor holding one new space of `width` channels (frozen for reason `frozen`)."""
        self.parent.append(len(self.parent))
        self.widths.append(width)
        if frozen or width is None:
            self.reasons[len(self.parent) - 1] = frozen or "channel count unknown"
        return (Segment(len(self.parent) - 1, width),)

    def _follow(self, call, role, times_called):
        layouts, shapes = self.layouts, self.calls.shapes
        inputs = [layouts[key] for key in call.inputs]
        if role == "kernel":
            layouts[call.outputs[0]] = self._new(shapes[call.outputs[0]][-1])
        elif role == "alias":
            layouts[call.outputs[0]] = inputs[0]
        elif role in ("channelwise", "merge"):
            for other in inputs[1:]:
                self._join(inputs[0], other, call)
            layouts[call.outputs[0]] = inputs[0]
        elif role == "concat":
            layouts[call.outputs[0]] = sum(inputs, ())
        elif role == "flatten":
            layouts[call.outputs[0]] = inputs[0] * math.prod(shapes[call.inputs[0]][1:-1])
        else:
            layer = call.layer
            what = "a nested model" if hasattr(layer, "layers") else type(layer).__name__
            why = f"{what} ({layer.name}) is called {times_called} times" if times_called > 1 else (
                f"{what} ({layer.name}), which the channel walk cannot follow")
            for layout in inputs:
                for segment in layout:
                    self.freeze(segment.space, why)
            for key in call.outputs:
                layouts[key] = self._new(shapes[key][-1], why)

    def _join(self, layout, other, call):
        if [s.width for s in layout] == [s.width for s in other]:
            for mine, theirs in zip(layout, other):
                self._union(mine.space, theirs.space)
            return
        for segment in (*layout, *other):
            self.freeze(segment.space, f"{type(call.layer).__name__} ({call.layer.name}) merges tensors whose "
                                       "channels come from different concatenations")

    def find(self, space):
        """The space `space` belongs to after every merge."""
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def _union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            reason = self.reasons.get(a) or self.reasons.get(b)
            if reason:
                self.reasons[a] = reason

    def freeze(self, space, reason):
        root = self.find(space)
        self.reasons.setdefault(root, reason)

    def frozen(self, space):
        """Why space `space` keeps its channels as they are, or None."""
        return self.reasons.get(self.find(space))

    def width(self, space):
        return self.widths[self.find(space)]

    def spaces(self):
        """Every space (its root key) in the order its first channels appear."""
        seen = {}
        for layout in self.layouts.values():
            for segment in layout:
                seen.setdefault(self.find(segment.space), None)
        return list(seen)

    def producers(self, space):
        """Calls of kernel layers that write space `space`."""
        root = self.find(space)
        return [call for call, role in zip(self.calls.calls, self.roles)
                if role == "kernel" and self.find(self.layouts[call.outputs[0]][0].space) == root]

    def consumers(self, space):
        """Calls of kernel layers that read space `space` (through any layout)."""
        root = self.find(space)
        return [call for call, role in zip(self.calls.calls, self.roles)
                if role == "kernel" and any(self.find(s.space) == root for s in self.layouts[call.inputs[0]])]

    def places(self, key, space):
        """(channels of space `space`, places): where tensor `key`'s last axis holds each of its channels (several
        places after a `Flatten`, one per time a `Concatenate` put it in)."""
        root, parts, offset = self.find(space), [], 0
        for segment in self.layouts[key]:
            if self.find(segment.space) == root:
                parts.append(offset + np.arange(segment.width))
            offset += segment.width
        return np.concatenate(parts).reshape(-1, self.width(root)).T

    def index(self, key, kept):
        """The channels of tensor `key` kept (in their new order) when each space keeps `kept[root]` (indices in
        it); spaces not in `kept` keep all their channels."""
        parts, offset = [], 0
        for segment in self.layouts[key]:
            root = self.find(segment.space)
            parts.append(offset + (kept[root] if root in kept else np.arange(segment.width)))
            offset += segment.width
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def taken_weights(self, kept):
        """Layer id -> its weights (numpy) with only the channels `kept` (root -> indices), for every layer whose
        weights change."""
        changed = {}
        for call, role in zip(self.calls.calls, self.roles):
            if role not in ("kernel", "channelwise") or not call.layer.weights:
                continue
            values = call.layer.get_weights()
            taken = _take(call.layer, role, values, self.index(call.inputs[0], kept),
                          self.index(call.outputs[0], kept))
            if taken is not None:
                changed[id(call.layer)] = taken
        return changed


def _take(layer, role, values, inputs, outputs):
    """`values` (the layer's weights) with input channels `inputs` and output channels `outputs` only, or None
    when both are every channel in order."""
    def identity(index, size):
        return len(index) == size and np.array_equal(index, np.arange(size))

    kind = layer_type(layer)[1]
    taken = list(values)
    if role == "channelwise":
        if identity(inputs, layer.weights[0].shape[kind.channel_axis if len(layer.weights[0].shape) > 1 else -1]):
            return None
        for i, value in enumerate(values):
            taken[i] = np.take(value, inputs, axis=kind.channel_axis if value.ndim > 1 else -1)
        return taken
    kernel = getattr(layer, kind.kernel)
    if identity(inputs, kernel.shape[-2]) and identity(outputs, kernel.shape[-1]):
        return None
    for attribute in kind.reads:
        i = variable_index(layer, getattr(layer, attribute))
        taken[i] = np.take(taken[i], inputs, axis=-2)
    i = variable_index(layer, kernel)
    taken[i] = np.take(taken[i], outputs, axis=-1)
    if getattr(layer, "use_bias", False):
        i = variable_index(layer, layer.bias)
        taken[i] = taken[i][outputs]
    return taken


def role_of(call, shapes):
    """What `call` does to the channels (last axis) of its tensors: "kernel", "channelwise", "merge", "concat",
    "flatten", "alias" (into or out of a nested model), or None (a call the walk cannot follow)."""
    layer = call.layer
    if isinstance(layer, Alias):
        return "alias"
    _, kind = layer_type(layer)
    if kind is None or kind.channels is None or getattr(layer, "data_format", None) == "channels_first":
        return None
    if kind.per_channel is not None and not kind.per_channel(layer, len(shapes[call.inputs[0]])):
        return None
    single = len(call.inputs) == 1 and len(call.outputs) == 1
    if kind.channels == "kernel":
        known = {kind.kernel, "bias", *kind.reads}
        weights = {id(getattr(layer, name)) for name in known if getattr(layer, name, None) is not None}
        plain = all(id(weight) in weights for weight in layer.weights)
        return "kernel" if single and getattr(layer, "groups", 1) == 1 and plain else None
    if kind.channels == "channelwise":
        return "channelwise" if single else None
    widths = {shapes[key][-1] for key in (*call.inputs, *call.outputs)}
    if kind.channels == "merge":
        return "merge" if len(widths) == 1 and len(call.outputs) == 1 and not has_constant_tensors(call) else None
    if kind.channels == "concat":
        return "concat" if len(call.outputs) == 1 else None
    if not single:
        return None
    if kind.channels == "flatten" or len(shapes[call.outputs[0]]) == 2:  # Reshape((-1,)) is a Flatten
        return "flatten"
    return "channelwise" if len(widths) == 1 else None  # a Reshape that keeps the last axis moves positions only


def channel_spaces(model):
    """The `ChannelSpaces` of a built functional or Sequential model (Keras 3 or tf_keras), nested models
    walked into."""
    return ChannelSpaces(layer_calls(model, nested=True))
