"""`prune_channels`: a physically thinner copy of a Keras 3 model, its channels chosen and refit on data."""

import numbers

import keras
import numpy as np

from rgp_keras._keras_src import is_rebuildable
from rgp_keras.channels.basis import principal_basis
from rgp_keras.channels.criteria import l1_norms, least_squares_order, removal_curves
from rgp_keras.channels.spaces import channel_spaces
from rgp_keras.channels.widths import (
    CANDIDATE_WIDTHS,
    NO_MASKS,
    PLANS,
    MacCosts,
    counts_at,
    kept_share,
    output_error,
    plan_makers,
    removal_orders_and_errors,
    uniform_counts_for_macs,
)
from rgp_keras.data_aware.reconstruct import reconstruct
from rgp_keras.data_aware.steps import calibration_set, fewest_rows_per_weight, progress_wanted
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.masking.selection import checked_selectors, layer_macs, matches
from rgp_keras.model_walk import clone_model, is_tf_keras, layer_calls, leaves, paired_leaves


def prune_channels(model, *, keep=None, macs=None, calibration_data=None, calibration_samples=None,
                   calibration_mixes="auto", calibration_batch_size=None, layers=None, verbose="auto"):
    """A copy of a Keras 3 model with fewer channels in its hidden layers: ordinary, thinner layers, no masks.

    Channels that must go together go together: the producers of a residual
    sum share their kept channels, BatchNormalization, depthwise convolutions,
    pooling and activations keep those of their input, `Concatenate` and
    `Flatten` map them onto their output, and every layer reading them drops
    the matching input weights (`rgp_keras.channels.spaces`). Model inputs and
    outputs keep all their channels, and so do tensors that reach a layer the
    walk cannot follow; `pruning_summary` names them.

    With `calibration_data`, linear bottlenecks (spaces only linear maps touch,
    such as MobileNetV2's residual streams) are first turned to the basis their
    readers need, on a copy computing the same function (`basis`); channels are
    chosen by what least squares cannot recover (Optimal Brain Surgeon over
    channel blocks, on each consumer's X^T X), then every layer reading pruned
    channels is refit by least squares to reproduce the dense model's outputs
    and BatchNormalization statistics are re-measured, as `prune_regular_graph`
    does. Without data, the channels
    with the largest L1 filter norms are kept (Li et al., ICLR 2017).

    Args:
        model: a built Keras 3 functional or Sequential model (not modified).
        keep: the fraction of each prunable channel space to keep, in (0, 1].
        macs: instead of `keep`, the fraction of the model's MACs to keep, in
            (0, 1]: without data one fraction for every space, the largest that
            meets it; with data a width per space (`widths`).
        calibration_data, calibration_samples, calibration_mixes,
            calibration_batch_size: unlabelled model inputs and how to use
            them, as in `prune_regular_graph`.
        layers: which layers may lose output channels: names, layer classes
            or a predicate (or a list of them). Default: every kernel layer
            whose output channels the walk can follow.
        verbose: "auto" (a progress bar for 16 or more refit layers), 1 or 0.

    Returns:
        The thinner model, uncompiled. `pruning_summary` shows each layer's
        width, parameters and MACs before and after, and the criterion used.

    Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu"),
    ...                           keras.layers.Dense(4)])
    >>> thin = prune_channels(model, keep=0.5)
    >>> thin.layers[0].units, thin.count_params() < model.count_params()
    (32, True)
    """
    check_model(model)
    keep, macs = _check_amount(keep, macs)
    progress_wanted(verbose, 0)  # a bad `verbose` fails before any work
    spaces = channel_spaces(model)
    free, held = prunable_spaces(spaces, model, layers)
    costs = MacCosts(model, spaces, free) if macs is not None else None
    counts = counts_at(spaces, free, keep) if keep is not None else uniform_counts_for_macs(costs, spaces, free, macs)
    calibration, fit = channel_calibration(model, spaces, free, counts, calibration_data, calibration_samples,
                                           calibration_mixes, calibration_batch_size)
    if calibration is None:
        criterion = "L1 filter norms (no calibration data)"
        kept = {root: np.sort(np.argsort(-l1_norms(spaces, root), kind="stable")[: counts[root]]) for root in free}
        return thinned_model(model, spaces, kept, held, criterion, None, verbose)
    model, spaces, criterion = turned_model(model, spaces, free, counts, calibration,
                                            f"least squares (Optimal Brain Surgeon over channels), refit on {fit}")
    if macs is None:
        kept = kept_channels(spaces, least_squares_order(spaces, free, counts, calibration), counts)
        return thinned_model(model, spaces, kept, held, criterion, calibration, verbose)
    return _thinned_for_macs(model, spaces, free, held, counts, costs, macs, calibration, criterion, verbose)


def turned_model(model, spaces, free, counts, calibration, criterion):
    """(`model`, or a copy of it computing the same function whose linear bottlenecks thinned to `counts` are
    turned to the basis their readers need (`basis.principal_basis`); its channel spaces; `criterion` saying so).
    The channels are then chosen and refit on the copy."""
    turned, roots = principal_basis(model, spaces, [root for root in free if counts[root] < spaces.width(root)],
                                    calibration)
    if not roots:
        return model, spaces, criterion
    return turned, channel_spaces(turned), (
        f"{criterion}; {len(roots)} linear bottleneck space(s) first turned to the basis their readers need")


def _thinned_for_macs(model, spaces, free, held, uniform, costs, target, calibration, criterion, verbose):
    """Of the whole plans of per-space widths for `target` of the MACs (`costs`: the model's `MacCosts`;
    `widths.PLANS`; `uniform`: one width for all), the thinned and refit model whose outputs stay nearest the
    dense model's on the calibration samples; its summary's criterion names the plan."""
    fewest = counts_at(spaces, free, CANDIDATE_WIDTHS[-1])
    curves = removal_curves(spaces, free, {root: min(count, fewest[root]) for root, count in uniform.items()},
                            calibration)
    order, errors = removal_orders_and_errors(curves)
    budget = target * costs.dense
    plans = {name: make(budget).counts
             for name, make in plan_makers(spaces, free, errors, costs, [NO_MASKS], budget).items()}
    plans["one width for all"] = uniform  # exactly the widths `keep` would give
    judged, seen = [], []
    for name in PLANS:
        if costs.total(plans[name]) > budget or plans[name] in seen:  # the search cannot go below CANDIDATE_WIDTHS
            continue
        seen.append(plans[name])
        thin = thinned_model(model, spaces, kept_channels(spaces, order, plans[name]), held, criterion, calibration,
                             verbose)
        judged.append((output_error(model, thin, calibration), name, thin))
    error, name, thin = min(judged, key=lambda plan: plan[0])
    others = ", ".join(f"{other} {value:.4g}" for value, other, _ in judged)
    chosen = (f"{criterion}; widths per space for macs={target:g}: {name} (the least relative output error on "
              f"the calibration samples of: {others})")
    for layer in leaves(thin):
        if getattr(layer, "pruned_channels", None):
            layer.pruned_channels["channels"] = chosen
    return thin


def channel_calibration(model, spaces, free, counts, calibration_data, calibration_samples, calibration_mixes,
                        calibration_batch_size):
    """(The calibration set, what the fit uses), or (None, None) without data; mixes are sized for the layers
    reading channels of the `free` spaces thinned to `counts`."""
    readers = _readers(spaces, free, counts)
    return calibration_set(
        model, calibration_data, calibration_samples, calibration_mixes, calibration_batch_size,
        lambda samples: fewest_rows_per_weight(model, readers, lambda layer: readers[id(layer)], samples))


def kept_channels(spaces, order, counts):
    """root -> the channels kept: all but the first `width - counts[root]` of its removal `order`."""
    return {root: np.setdiff1d(np.arange(spaces.width(root)), removed[: spaces.width(root) - counts[root]])
            for root, removed in order.items()}


def thinned_model(model, spaces, kept, held, criterion, calibration, verbose, notes=None):
    """`model` with only the `kept` channels of each space; with calibration, every layer reading fewer channels
    refit by least squares and BatchNormalization re-measured. Each layer is annotated for `pruning_summary`
    (`held`: root -> why a space kept its width; `notes`: layer id -> more entries)."""
    thin = _thinned(model, spaces, kept)
    report = {}
    if calibration is not None:
        report = reconstruct(model, thin, calibration, progress=progress_wanted(verbose, len(thin.layers)),
                             channels=channel_map(spaces, kept, thin), nested=True)
    _annotate(model, thin, spaces, kept, held, criterion, report, notes or {})
    return thin


def check_model(model):
    """Raises unless `model` is a built Keras 3 functional or Sequential model without RGP masks."""
    if is_tf_keras(model):
        raise InputTypeError(
            f"{type(model).__name__} {model.name!r} is a tf_keras (Keras 2) model, and prune_channels takes Keras 3 "
            "models (`import keras`): build the same architecture with keras.layers, copy the weights over with "
            "`set_weights(tf_keras_model.get_weights())` and prune that. (RGP masks on tf_keras models: "
            "rgp_keras.prune_regular_graph, through TF-MOT.)"
        )
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"`model` must be a Keras 3 functional or Sequential model, got {type(model).__name__}.")
    if not is_rebuildable(model):
        raise InputTypeError(
            f"{type(model).__name__} is a subclassed model: prune_channels needs a functional or Sequential model, "
            "whose layer graph says which layers read which channels. Build the architecture with the functional "
            "API (or keras.Sequential), or prune its layers' weights with rgp_keras.prune_regular_graph."
        )
    if not model.built or not model.inputs:
        raise InputValueError(
            f"Model {model.name!r} is not built: give it a `keras.Input(shape)` or call `model.build(input_shape)` "
            "before prune_channels, so that channel counts are known."
        )
    for layer in leaves(model):
        if isinstance(layer, keras.Model) and not is_rebuildable(layer):
            raise InputTypeError(
                f"Model {model.name!r} contains the subclassed model {layer.name!r}, whose layers cannot be rebuilt "
                "thinner; rebuild that block as a functional or Sequential model."
            )
    if any(hasattr(layer, "masked_kernel") for layer in leaves(model)):
        raise InputValueError(
            f"Model {model.name!r} carries RGP masks: prune its channels first, then apply prune_regular_graph "
            "to the thinner model (or strip_pruning it first)."
        )


def _check_amount(keep, macs):
    if (keep is None) == (macs is None):
        raise InputValueError(
            "Give exactly one of `keep` (the fraction of each channel space to keep) and `macs` (the fraction of "
            f"the model's MACs to keep), got keep={keep!r} and macs={macs!r}."
        )
    name, value = ("keep", keep) if keep is not None else ("macs", macs)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be a number in (0, 1], got {value!r} of type {type(value).__name__}.")
    if not 0 < value <= 1:
        raise InputValueError(f"`{name}` must be in (0, 1] (1 keeps every channel), got {value}.")
    return (float(keep), None) if keep is not None else (None, float(macs))


def prunable_spaces(spaces, model, layers):
    """(The spaces whose width may change, root -> why a space that has producers keeps its width)."""
    free, held = [], {}
    selectors = None if layers is None else checked_selectors(model, layers)
    for root in spaces.spaces():
        producers = spaces.producers(root)
        if not producers:
            continue
        reason = spaces.frozen(root)
        if reason is None and selectors is not None:
            unselected = [call.layer.name for call in producers if not matches(call.layer, selectors)]
            if unselected:
                reason = f"not selected by `layers` ({', '.join(unselected)})"
        if reason is None:
            frozen = [call.layer.name for call in producers if not call.layer.trainable]
            if frozen:
                reason = f"not trainable ({', '.join(frozen)})"
        if reason is None and spaces.width(root) < 2:
            reason = "a single channel"
        if reason:
            held[root] = reason
        else:
            free.append(root)
    if not free:
        why = "; ".join(sorted({f"{reason}" for reason in held.values()})) or "it has no hidden kernel layers"
        raise InputValueError(
            f"Model {model.name!r} has no channel space prune_channels may thin: {why}. Hidden Dense/Conv/"
            "SeparableConv layers that are trainable (and selected by `layers`) and whose outputs reach no model "
            "output directly can be thinned."
        )
    return free, held


def _readers(spaces, free, counts):
    """Layer id -> the share of its input channels kept, for the layers whose inputs lose channels (refit)."""
    return {id(call.layer): kept_share(spaces, call.inputs[0], counts)
            for root in free for call in spaces.consumers(root)}


def _thinned(model, spaces, kept):
    """A copy of `model` whose producers write only their `kept` channels, every weight taken accordingly."""
    changes, entered = {}, {}  # layer id -> config entries that name its output width; nested model -> its width
    for call, role in zip(spaces.calls.calls, spaces.roles):
        width = len(spaces.index(call.outputs[0], kept)) if role else None
        if role == "kernel":
            changes[id(call.layer)] = {layer_type(call.layer)[1].width: width}
        elif role == "alias" and call.layer.name.endswith("/input"):
            entered[id(call.layer.model)] = width
        elif layer_type(call.layer)[0] == "Reshape" and role:
            changes[id(call.layer)] = {"target_shape": (*spaces.calls.shapes[call.outputs[0]][1:-1], width)}
    weights = spaces.taken_weights(kept)

    def clone(layer):
        if id(layer) in entered:  # a nested model, rebuilt on its thinner input
            given = layer.inputs[0]
            tensor = keras.Input(batch_shape=(*given.shape[:-1], entered[id(layer)]), dtype=given.dtype)
            return keras.models.clone_model(layer, input_tensors=tensor, clone_function=clone)
        config = layer.get_config()
        config.update(changes.get(id(layer), {}))
        return layer.__class__.from_config(config)

    thin = clone_model(model, clone, recursive=False)
    for original, new in paired_leaves(model, thin):
        new.set_weights(weights.get(id(original)) or original.get_weights())
    return thin


def channel_map(spaces, kept, thin):
    """Tensor id of `thin` -> the channels of the dense model's tensor it holds, where it holds fewer."""
    channels = {}
    for call, new_call in zip(spaces.calls.calls, layer_calls(thin, nested=True).calls):
        for key, new_key in zip(call.outputs, new_call.outputs):
            index = spaces.index(key, kept)
            if len(index) != spaces.calls.shapes[key][-1]:
                channels[new_key] = index
    return channels


def _annotate(model, thin, spaces, kept, held, criterion, report, extra):
    """Each thinned layer's `pruned_channels`, read by `pruning_summary`: its width before -> after, its params
    and MACs before, the criterion ("channels"), why its output channels stayed ("kept_width"), its refit."""
    notes = {}
    for call, role in zip(spaces.calls.calls, spaces.roles):
        if role not in ("kernel", "channelwise"):
            continue
        sides = (("in", call.inputs[0]), ("out", call.outputs[0])) if role == "kernel" else (("", call.inputs[0]),)
        widths = [(side, spaces.calls.shapes[key][-1], len(spaces.index(key, kept))) for side, key in sides]
        root = spaces.find(spaces.layouts[call.outputs[0]][0].space)
        notes[id(call.layer)] = {
            "width": ", ".join(f"{side} {before} -> {after}".strip() for side, before, after in widths
                               if before != after),
            "kept_width": held.get(root, "") if role == "kernel" else "",
        }
    for original, new in paired_leaves(model, thin):
        if not original.weights:
            continue
        info = {"params": original.count_params(), "macs": layer_macs(original, original)[0], "channels": criterion,
                "width": "", "kept_width": ""}
        info.update(notes.get(id(original), {}))
        info.update(report.get(id(new), {}))
        info.update(extra.get(id(original), {}))
        new.pruned_channels = info
