"""Channel assignment: permute hidden channels so that the fixed RGP mask keeps the important weights.

RGP keeps the weights joining contiguous channel groups. Permuting the channels
of a hidden tensor consistently in every layer that writes it (kernel output
axis, bias), passes it through channel by channel (BatchNormalization,
depthwise convolutions, activations, pooling, residual Adds, ...) and reads it
(kernel input axis) leaves the dense model's function unchanged, but changes
which trained weights fall inside the kept blocks. For each such tensor
("channel space") we choose the permutation that maximises the importance the
masks keep, by assigning channels to groups of fixed sizes (a transportation problem,
solved exactly by `_transport.best_groups`), alternating over spaces until the
kept importance stops improving (Pool & Yu, NeurIPS 2021, do the same for 2:4
sparsity). A weight's importance is w^2 (summed over the kernel window), times
its input channel's mean square activation on calibration data when given.

Channel spaces come from the width axis's walk (`rgp_keras.channels.spaces`):
spaces that touch a model input or output, a nested model or any layer it
cannot follow keep their order, and so do spaces laid out beside others by a
Concatenate or repeated per position by a Flatten (RGP's channel groups of
those tensors are not the space's); the report says why.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from rgp_keras.channels.spaces import ChannelSpaces
from rgp_keras.data_aware._transport import best_groups
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.masking.masks import channel_groups, group_mask
from rgp_keras.model_walk import layer_calls, to_numpy


def _is_kernel(layer):
    """Whether `layer`'s `kernel` maps every input channel to every output channel, channels last."""
    kind = layer_type(layer)[1]
    return kind is not None and kind.kernel == "kernel" and kind.channels == "kernel" and getattr(
        layer, "groups", 1) == 1 and getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def _kept_order(spaces):
    """Space root -> why assignment keeps its order: frozen by the walk, or laid out beside others (Concatenate)
    or repeated per position (Flatten), where RGP's channel groups of the tensor are not the space's."""
    reasons = {root: spaces.frozen(root) for root in spaces.spaces() if spaces.frozen(root)}
    for call, role in zip(spaces.calls.calls, spaces.roles):
        if role in ("concat", "flatten"):
            for key in call.inputs:
                for segment in spaces.layouts[key]:
                    reasons.setdefault(spaces.find(segment.space), f"{type(call.layer).__name__} ({call.layer.name})")
    return reasons


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
    spaces = ChannelSpaces(calls)
    kept_order = _kept_order(spaces)
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
    root_of = lambda key: spaces.find(spaces.layouts[key][0].space) if len(spaces.layouts[key]) == 1 else None
    # slot of each channel, per free space that touches a wrapped layer (identity to start)
    slots, members = {}, {}
    for root in spaces.spaces():
        if root in kept_order:
            continue
        producers = [call for call in spaces.producers(root) if id(call.layer) in importance]
        consumers = [call for call in spaces.consumers(root) if id(call.layer) in importance]
        if (producers or consumers) and spaces.width(root) >= nodes:
            slots[root] = np.arange(spaces.width(root))
            members[root] = producers, consumers

    def groups_of(key):
        root = root_of(key)
        base = channel_groups(calls.shapes[key][-1], nodes)
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
            producers, consumers = members[root]
            channels = len(slots[root])
            score = np.zeros((channels, nodes))
            for call in consumers:
                out_groups = np.eye(nodes)[groups_of(call.outputs[0])]
                score += importance[id(call.layer)] @ out_groups @ blocks.T
            for call in producers:
                in_groups = np.eye(nodes)[groups_of(call.inputs[0])]
                score += importance[id(call.layer)].T @ in_groups @ blocks
            base = channel_groups(channels, nodes)
            group = _groups(score, base, nodes)
            # each group's slots to its channels, in their order
            slots[root] = np.empty(channels, np.int64)
            slots[root][np.argsort(group, kind="stable")] = np.argsort(base, kind="stable")
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
            f"{side} channels keep their order: {why}"
            for side, key in (("input", call.inputs[0]), ("output", call.outputs[0]))
            for why in [_why_kept(spaces, kept_order, key)] if why
        ]
        report[layer_id] = {
            "importance_before": before[layer_id] / whole,
            "importance_after": after[layer_id] / whole,
            "kept_order": "; ".join(reasons),
        }
    orders = {root: np.argsort(slot) for root, slot in slots.items()}  # order[s]: the channel moving to s
    return (spaces.taken_weights(orders) if improved else {}), report


def _groups(score, base, nodes):
    """The group of each channel (rows of `score`) maximising the summed score, as many in each as in `base`."""
    try:
        return best_groups(np.ascontiguousarray(score, np.float64), np.bincount(base, minlength=nodes))
    except RuntimeError:  # rounding left a negative cycle: the c x c linear assignment, slower, never fails
        rows, columns = linear_sum_assignment(score[:, base], maximize=True)
        return base[columns[np.argsort(rows)]]


def _why_kept(spaces, kept_order, key):
    """Why tensor `key`'s channels keep their order, or ""."""
    reasons = [kept_order.get(spaces.find(segment.space)) for segment in spaces.layouts[key]]
    return next((reason for reason in reasons if reason), "")

