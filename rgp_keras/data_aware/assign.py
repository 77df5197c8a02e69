"""Channel assignment: permute hidden channels so that the fixed RGP mask keeps the important weights.

RGP keeps the weights joining contiguous channel groups. Permuting the channels
of a hidden tensor consistently in every layer that writes it (kernel output
axis, bias), passes it through channel by channel (BatchNormalization,
depthwise convolutions, activations, pooling, residual Adds, ...) and reads it
(kernel input axis) leaves the dense model's function unchanged, but changes
which trained weights fall inside the kept blocks. For each such tensor
("channel space") we choose the permutation that maximises the importance the
masks keep, by linear assignment of channels to group slots
(`scipy.optimize.linear_sum_assignment`), alternating over spaces until the
kept importance stops improving (Pool & Yu, NeurIPS 2021, do the same for 2:4
sparsity). A weight's importance is w^2 (summed over the kernel window), times
its input channel's mean square activation on calibration data when given.

Spaces that touch a model input or output, a Flatten/Reshape/Concatenate, a
nested model or any layer not known to act channel by channel keep their order;
the report says why.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from rgp_keras.channels.spaces import role_of
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.masking.masks import channel_groups, group_mask
from rgp_keras.model_walk import layer_calls, to_numpy, variable_index


class _Spaces:
    """Union-find over tensor ids; a root records why its space must keep channel order (or None)."""

    def __init__(self):
        self.parent, self.frozen = {}, {}

    def find(self, key):
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.frozen[a] = self.frozen.get(a) or self.frozen.get(b)

    def freeze(self, key, reason):
        root = self.find(key)
        self.frozen[root] = self.frozen.get(root) or reason


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def _is_kernel(layer):
    """Whether `layer`'s kernel maps every input channel to every output channel, channels last."""
    kind = layer_type(layer)[1]
    return kind is not None and kind.kernel == "kernel" and kind.channels == "kernel" and getattr(
        layer, "groups", 1) == 1 and _channels_last(
        layer)


def _kind(call, shapes):
    """"kernel", "channelwise", "merge" or None (anything else, a Concatenate or Flatten too: its tensors keep
    channel order), by the coupling rules of the width axis's walk (`rgp_keras.channels.spaces.role_of`)."""
    role = role_of(call, shapes)
    if role == "kernel":
        return "kernel" if _is_kernel(call.layer) else None
    return role if role in ("channelwise", "merge") else None


def channel_spaces(calls):
    """Group the tensors of `calls` (a model's `LayerCalls`) into channel spaces.

    Returns `(spaces, members)`: the union-find and, per root, the calls of
    kernel layers writing it ("producers"), reading it ("consumers") and
    channel-wise layers with weights inside it.
    """
    spaces = _Spaces()
    for key in calls.inputs:
        spaces.freeze(key, "a model input")
    for key in calls.outputs:
        spaces.freeze(key, "a model output")
    calls_of = {}
    for call in calls.calls:
        calls_of[id(call.layer)] = calls_of.get(id(call.layer), 0) + 1
    members = {}
    for call in calls.calls:
        kind = _kind(call, calls.shapes)
        if calls_of[id(call.layer)] > 1:
            for key in (*call.inputs, *call.outputs):
                spaces.freeze(key, f"layer {call.layer.name} is called more than once")
        elif kind == "kernel":
            members.setdefault(call.inputs[0], _members())["consumers"].append(call)
            members.setdefault(call.outputs[0], _members())["producers"].append(call)
        elif kind in ("channelwise", "merge"):
            for key in (*call.inputs[1:], *call.outputs):
                spaces.union(call.inputs[0], key)
            if kind == "channelwise" and call.layer.weights:
                members.setdefault(call.inputs[0], _members())["channelwise"].append(call)
        else:
            what = "a nested model" if hasattr(call.layer, "layers") else type(call.layer).__name__
            for key in (*call.inputs, *call.outputs):
                spaces.freeze(key, f"{what} ({call.layer.name})")
    by_root = {}
    for key, member in members.items():
        merged = by_root.setdefault(spaces.find(key), _members())
        for role, role_calls in member.items():
            merged[role].extend(role_calls)
    return spaces, by_root


def _members():
    return {"producers": [], "consumers": [], "channelwise": []}


def assign_channels(model, graph, wrapped, *, self_loops=False, input_energy=None, rounds=10):
    """Permuted weights of `model` that keep its function and raise the importance RGP's mask keeps.

    Args:
        model: the dense Keras 3 or tf_keras model (not modified).
        graph: the `RegularGraph` whose mask will be applied.
        wrapped: ids of the layers that will be masked.
        self_loops: as in `prune_regular_graph`.
        input_energy: layer id -> mean square of each input channel on
            calibration data, or None. A weight's importance is the output
            energy it carries, w^2 * E[x^2] (the saliency of Optimal Brain
            Surgeon with a diagonal Hessian), or w^2 without data.
        rounds: most rounds of assignment over all spaces.

    Returns:
        `(weights, report)`: layer id -> new weight list for every layer whose
        weights change, and layer id -> {"importance_before", "importance_after",
        "kept_order"} for the wrapped layers (kept shares of importance, and why a
        side kept its channel order, or "").
    """
    calls = layer_calls(model)
    spaces, members = channel_spaces(calls)
    blocks = group_mask(graph, self_loops).astype(np.float64)
    nodes = graph.nodes
    importance = {}
    for call in calls.calls:
        if id(call.layer) in wrapped and _is_kernel(call.layer):
            kernel = to_numpy(call.layer.kernel)
            weight = np.square(kernel.astype(np.float64)).reshape(-1, *kernel.shape[-2:]).sum(axis=0)
            if input_energy is not None and id(call.layer) in input_energy:
                weight = weight * input_energy[id(call.layer)][:, None]
            importance[id(call.layer)] = weight
    call_of = {id(call.layer): call for call in calls.calls}
    # slot of each channel, per free space that touches a wrapped layer (identity to start)
    slots = {}
    for root, member in members.items():
        if spaces.frozen.get(root):
            continue
        if any(id(call.layer) in importance for call in member["producers"] + member["consumers"]):
            channels = calls.shapes[member["producers"][0].outputs[0] if member["producers"] else
                                        member["consumers"][0].inputs[0]][-1]
            if channels >= nodes:
                slots[root] = np.arange(channels)

    def groups_of(key):
        root = spaces.find(key)
        channels = calls.shapes[key][-1]
        base = channel_groups(channels, nodes)
        return base[slots[root]] if root in slots else base

    def kept():
        return {
            layer_id: float(np.sum(weight * blocks[groups_of(call.inputs[0])][:, groups_of(call.outputs[0])]))
            for layer_id, weight in importance.items()
            for call in [call_of[layer_id]]
        }

    before = after = kept()
    total_before = total = sum(before.values())
    for _ in range(rounds):
        for root in slots:
            member = members[root]
            channels = len(slots[root])
            score = np.zeros((channels, nodes))
            for call in member["consumers"]:
                if id(call.layer) in importance:
                    out_groups = np.eye(nodes)[groups_of(call.outputs[0])]
                    score += importance[id(call.layer)] @ out_groups @ blocks.T
            for call in member["producers"]:
                if id(call.layer) in importance:
                    in_groups = np.eye(nodes)[groups_of(call.inputs[0])]
                    score += importance[id(call.layer)].T @ in_groups @ blocks
            cost = score[:, channel_groups(channels, nodes)]
            rows, columns = linear_sum_assignment(cost, maximize=True)
            slots[root] = columns[np.argsort(rows)]
        after = kept()
        previous, total = total, sum(after.values())
        if total <= previous * (1 + 1e-6):
            break
    improved = total > total_before
    if not improved:  # keep the channel order: nothing to gain
        after = before
    report = {}
    for layer_id in importance:
        call = call_of[layer_id]
        whole = float(importance[layer_id].sum()) or 1.0
        reasons = [
            f"{side} channels keep their order: {spaces.frozen[spaces.find(key)]}"
            for side, key in (("input", call.inputs[0]), ("output", call.outputs[0]))
            if spaces.frozen.get(spaces.find(key))
        ]
        report[layer_id] = {
            "importance_before": before[layer_id] / whole,
            "importance_after": after[layer_id] / whole,
            "kept_order": "; ".join(reasons),
        }
    return (permuted_weights(calls, spaces, members, slots) if improved else {}), report


def permuted_weights(calls, spaces, members, slots):
    weights = {}

    def current(layer):
        if id(layer) not in weights:
            weights[id(layer)] = layer.get_weights()
        return weights[id(layer)]

    for root, slot in slots.items():
        if np.array_equal(slot, np.arange(len(slot))):
            continue
        order = np.argsort(slot)  # order[s]: the channel that moves to position s
        member = members[root]
        for call in member["producers"]:
            values = current(call.layer)
            kernel_index = variable_index(call.layer, call.layer.kernel)
            values[kernel_index] = values[kernel_index][..., order]
            if getattr(call.layer, "use_bias", False):
                bias_index = variable_index(call.layer, call.layer.bias)
                values[bias_index] = values[bias_index][order]
        for call in member["consumers"]:
            values = current(call.layer)
            kernel_index = variable_index(call.layer, call.layer.kernel)
            values[kernel_index] = np.take(values[kernel_index], order, axis=-2)
        for call in member["channelwise"]:
            values = current(call.layer)
            axis = layer_type(call.layer)[1].channel_axis
            for i, value in enumerate(values):
                values[i] = np.take(value, order, axis=axis if value.ndim > 1 else -1)
    return weights
