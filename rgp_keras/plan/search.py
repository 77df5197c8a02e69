"""`prune_for_latency`: per channel space a width, and per wide layer RGP or not, that bring a model's LiteRT file
to a target latency at the least accuracy cost, measured on the calibration data.

Three measurements meet here:
- latency: every segment of the model (`latency.model_segments`) is timed at
  a few uniform widths, and its time at any other width is interpolated in
  its kept MAC share (a kernel layer's input share times its output share,
  any other segment's output share); a layer an RGP graph may mask is also
  timed as the compact kernel `export_tflite` writes;
- sensitivity: for each space, the error the least-squares refit cannot
  recover after each channel removed, in the data-aware criterion's order
  (`channels.criteria.removal_curves`, Optimal Brain Surgeon over channel
  blocks; relative to each consumer's output energy, summed over them); for
  a masked layer, its refit's residual (`channels.criteria.mask_residuals`);
- search: from the dense model, repeatedly the step (a space to a narrower
  candidate width, or a layer masked) that adds the least error per
  millisecond saved, until the predicted latency meets the budget: a greedy
  knapsack over the table. Coupled spaces (a residual sum's producers) are
  one space, so one width.
The summed error ranks whole plans poorly, though (benchmarks/planner_proxy.py:
it overstates thinning the middle layers, whose loss later refits recover),
so it only proposes: three plans are made, each predicted exactly (each new
segment timed) with its budget corrected by what the interpolation missed -
the least summed error, one width for all spaces, and halfway between the two
(each space's fraction the geometric mean of theirs, scaled to the budget, what
the scale leaves filled by the search's steps back) - and each again on whole
channel tiles (`CHANNEL_TILE`); each is applied: thinned (`prune_channels`' engine), masked
(`prune_regular_graph`'s, channels in their order as the sensitivities
assumed) and refit in one pass over the calibration data against the dense
model (`data_aware.reconstruct`). The plan whose model's outputs are nearest
the dense model's on the calibration samples (`channels.widths.output_error`)
is returned.
"""

import copy
import math
import warnings
from typing import NamedTuple

import numpy as np

from rgp_keras._checks import check_int
from rgp_keras.channels.criteria import mask_residuals, removal_curves
from rgp_keras.channels.prune import (
    channel_calibration,
    channel_map,
    check_model,
    kept_channels,
    prunable_spaces,
    thinned_model,
    turned_model,
)
from rgp_keras.channels.spaces import channel_spaces
from rgp_keras.channels.widths import (
    CANDIDATE_WIDTHS,
    NO_MASKS,
    MaskOption,
    charged_counts,
    counts_at,
    kept_share,
    output_error,
    plan_makers,
    removal_orders_and_errors,
)
from rgp_keras.data_aware.reconstruct import reconstruct
from rgp_keras.data_aware.steps import progress_wanted
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.graph import RegularGraph
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.masking.masks import kernel_mask, prunable_kernel
from rgp_keras.masking.selection import checked_selectors, matches, narrow_side, skip_reason
from rgp_keras.model_walk import is_rgp_wrapper, leaves
from rgp_keras.plan.latency import LatencyPrediction, LatencyTable, model_segments, predict_latency, resolve_table
from rgp_keras.prune import prune_regular_graph

# The RGP graphs (nodes, degree) a plan may mask layers with (densities 1/2 and 1/4), on layers whose channel groups
# are at least _GROUP_WIDTH wide: below that XNNPACK's grouped kernels stop running at their MAC share.
RGP_GRAPHS = ((4, 2), (8, 2))
_GROUP_WIDTH = 16
# The uniform widths timed to interpolate between.
_TIMED_WIDTHS = (1.0, 0.625, 0.375, 0.125)
# Searches with a corrected budget until the exact prediction is this close to the target (or _SEARCHES ran).
_TOLERANCE, _SEARCHES = 0.03, 6
# XNNPACK's GEMM kernels compute 16 output channels at a time on x86 (8 on Arm, whose tiles these multiples also
# fill): a layer of 17-32 channels runs as one of 32. The benchmark CNN's file at 16-32-64-64 channels measured
# 0.271x dense, at 16-32-65-65 0.364x (a one-off probe on one machine, side by side). Each whole plan is also
# made with every count charged as the next multiple of it (its channels filling the tiles it pays for; the search
# stepping a tile at a time, a timed width read as the tiles it ran on) and judged beside the others, timed as they
# are (on small layers tiles matter less, and the plans as they are may win).
CHANNEL_TILE = 16


class LatencyPlan(NamedTuple):
    """What `prune_for_latency` chose: per kernel layer (`rows`: dicts of layer, width "before -> after",
    graph, ms, sensitivity), the predicted latencies (ms, one sample) of the dense and the pruned file, and the
    whole plans it judged (`candidates`)."""

    target: float
    dense_ms: float
    predicted_ms: float
    threads: int
    rows: list
    candidates: tuple = ()  # per plan judged: dicts of plan, predicted (x dense), output_error, chosen

    def __str__(self):
        header = ("layer", "width", "graph", "ms", "sensitivity", "note")
        lines = [(row["layer"], row["width"], row["graph"], f"{row['ms']:.3f}", f"{row['sensitivity']:.4f}",
                  f"width kept: {row['kept_width']}" if row["kept_width"] else "") for row in self.rows]
        widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
        render = lambda line: "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        others = self.predicted_ms - sum(row["ms"] for row in self.rows)
        return "\n".join([
            render(header), render(["-" * width for width in widths]), *map(render, lines),
            f"other segments and the file call: {others:.3f} ms",
            f"predicted {self.predicted_ms:.3f} ms = {self.predicted_ms / self.dense_ms:.3f} x the dense file's "
            f"{self.dense_ms:.3f} ms (target {self.target:.3g}), LiteRT {self.threads} thread(s)",
            *(["plans judged by the relative squared error of the model's outputs on the calibration samples:"]
              + [f"  {'*' if row['chosen'] else ' '} {row['plan']}: {row['predicted']:.3f} x dense, output error "
                 f"{row['output_error']:.4g}" for row in self.candidates] if self.candidates else []),
        ])


def prune_for_latency(model, target, *, calibration_data, threads=1, layers=None, latency_table=None,
                      cache_dir=None, calibration_samples=None, calibration_batch_size=None, verbose="auto"):
    """A thinner copy of `model` whose float LiteRT file runs in `target` times the dense file's time, each
    channel space given the width that costs the least accuracy, and the plan that was chosen.

    Latencies come from `predict_latency`'s table (this machine's, measured
    once and kept in `cache_dir`, or `latency_table` measured on the target
    with `rgp bench-layers`); the accuracy cost of each width from the
    calibration data (see the module). Three whole plans (the search's, one
    width for all, halfway between), and each again on whole 16-channel
    tiles (`CHANNEL_TILE`), are each thinned as `prune_channels`
    does, RGP-masked where planned and refit in one pass over the calibration
    data; the one whose outputs stay nearest the dense model's on the
    calibration samples is returned, ready for `fit` and `export_tflite`.

    Args:
        model: a built Keras 3 functional or Sequential model (not modified).
        target: the pruned file's latency as a fraction of the dense file's, in (0, 1).
        calibration_data: unlabelled model inputs, as for `prune_channels`
            (required: the sensitivities are measured on them).
        threads: LiteRT threads the latencies are measured (or were measured) at.
        layers: which layers may lose output channels or be masked, as for `prune_channels`.
        latency_table: a `LatencyTable` or the path of one; default this machine's. A table measured on
            another device (`rgp bench-layers`, which times what the planner reads) is only read: the
            plan's latency is then the interpolated one, not re-measured.
        cache_dir: where this machine's table is kept (default `~/.cache/rgp_keras/latency`).
        calibration_samples, calibration_batch_size: as for `prune_channels`.
        verbose: "auto" (progress bars for long steps), 1 or 0.

    Returns:
        (the pruned model, uncompiled; its `LatencyPlan`). `pruning_summary`
        of the model shows each layer's width and its planned ms and sensitivity.

    Example:
    >>> pruned, plan = prune_for_latency(model, 0.35, calibration_data=x[:512])  # doctest: +SKIP
    >>> print(plan)  # doctest: +SKIP
    """
    check_model(model)
    target = _check_target(target)
    threads = check_int("threads", threads, minimum=1)
    progress_wanted(verbose, 0)  # a bad `verbose` fails before any work
    if calibration_data is None:
        raise InputValueError("`calibration_data` is required: each width's accuracy cost is measured on it "
                              "(unlabelled model inputs, a few hundred samples; as for prune_channels).")
    table = resolve_table(latency_table, threads, cache_dir)
    spaces = channel_spaces(model)
    free, held = prunable_spaces(spaces, model, layers)
    fewest = counts_at(spaces, free, CANDIDATE_WIDTHS[-1])
    latency = _LatencyModel(model, spaces, free, table, verbose)
    dense = predict_latency(model, threads=threads, table=table, verbose=0)
    budget = target * dense.total_ms
    if latency.total(fewest) > budget:
        raise InputValueError(
            f"`target` {target} is below what this model can reach: with every prunable space at "
            f"{CANDIDATE_WIDTHS[-1]} of its channels, the file is predicted at "
            f"{latency.total(fewest) / dense.total_ms:.3f} x the dense file's {dense.total_ms:.3f} ms (the layers that "
            "keep their width and the file's call cost remain); pass a larger target.")
    calibration, fit = channel_calibration(model, spaces, free, fewest, calibration_data, calibration_samples, "auto",
                                           calibration_batch_size)
    model, spaces, criterion = turned_model(
        model, spaces, free, fewest, calibration,
        f"prune_for_latency: least squares (Optimal Brain Surgeon over channels), refit on {fit}")
    curves = removal_curves(spaces, free, fewest, calibration)
    order, errors = removal_orders_and_errors(curves)
    options = [NO_MASKS] + [option for graph in _graphs()
                            if (option := _masks(model, spaces, graph, latency, layers, table, calibration))]
    judged = []
    for name, (predicted, search) in _candidates(model, spaces, free, held, order, errors, latency, options, budget,
                                                 table, verbose):
        rows, notes = _plan_rows(spaces, search, held, predicted)
        pruned = _applied(model, spaces, held, kept_channels(spaces, order, search.counts), search, criterion,
                          calibration, notes, fit, verbose)
        judged.append((output_error(model, pruned, calibration), name, predicted, rows, pruned))
    # a plan predicted over the budget would win by being slower (none within it: the least summed error's)
    fair = [plan for plan in judged if plan[2].total_ms <= budget * (1 + _TOLERANCE)] or judged[:1]
    error, name, predicted, rows, pruned = min(fair, key=lambda plan: plan[0])
    candidates = [{"plan": other, "predicted": float(ms.total_ms / dense.total_ms), "output_error": float(value),
                   "chosen": other == name} for value, other, ms, _, _ in judged]
    return pruned, LatencyPlan(target, dense.total_ms, predicted.total_ms, threads, rows, candidates)


def _candidates(model, spaces, free, held, order, errors, latency, options, budget, table, verbose):
    """[(name, (its `LatencyPrediction`, its `WidthSearch`))] of the whole plans to judge (`plan_makers` on the
    interpolated latencies), each corrected to the budget (`_corrected`), duplicates left out."""
    tiled = latency.on_tiles(CHANNEL_TILE)
    makers = {**plan_makers(spaces, free, errors, latency, options, budget),
              **{f"{name}, {CHANNEL_TILE}-channel tiles": make
                 for name, make in plan_makers(spaces, free, errors, tiled, options, budget).items()}}
    found, seen = [], set()
    for name, make in makers.items():
        predicted, search = _corrected(make, model, spaces, held, order, latency, budget, table, verbose)
        key = (tuple(sorted(search.counts.items())), frozenset(search.masked_names))
        if key not in seen:
            seen.add(key)
            found.append((name, (predicted, search)))
    return found


def _corrected(make, model, spaces, held, order, latency, budget, table, verbose):
    """(The plan's `LatencyPrediction`, its `WidthSearch`): `make(budget)`'s plan, made again with the budget
    corrected by the exact prediction (on this machine's table) until that is within _TOLERANCE of the budget
    (a correction that would leave the scales already found under and over it halves that bracket); the plan
    predicted nearest it."""
    tried, scale, under, over = [], 1.0, 0.0, math.inf
    for _ in range(_SEARCHES if table.is_local else 1):  # a target's table is read, never extended
        search = make(scale * budget)
        if table.is_local:
            shapes = _applied(model, spaces, held, kept_channels(spaces, order, search.counts), search, "", None, {})
            prediction = predict_latency(shapes, threads=table.threads, table=table, verbose=verbose, reference=model)
        else:
            prediction = LatencyPrediction(latency.fixed + sum(search.term_costs),
                                           list(zip(latency.names, search.term_costs)))
        tried.append((prediction, search))
        ratio = prediction.total_ms / budget
        if abs(ratio - 1) <= _TOLERANCE:
            break
        if ratio < 1:
            under = max(under, scale)
        else:
            over = min(over, scale)
        scale /= ratio
        if not under < scale < over:  # widths are discrete: past a scale already tried, halve the bracket
            scale = (under + over) / 2
    # discrete widths can step over the budget from either side
    return min(tried, key=lambda plan: abs(plan[0].total_ms / budget - 1))


def _applied(model, spaces, held, kept, search, criterion, calibration, notes, fit=None, verbose=0):
    """`model` thinned to `kept` and its layers `search` chose masked by its graph (channels in their order, as
    the sensitivities assumed), then with `calibration` every changed layer refit in one pass against `model`:
    thinned readers, masked layers and those after them; BatchNormalization re-measured. `fit` says on what."""
    if not search.masked:
        return thinned_model(model, spaces, kept, held, criterion, calibration, verbose, notes)
    thin = thinned_model(model, spaces, kept, held, criterion, None, 0, notes)
    with warnings.catch_warnings():  # the plan measured what the masks buy; the estimate's warning would not help
        warnings.filterwarnings("ignore", "Sparsity .* is estimated to run at")
        masked = prune_regular_graph(thin, graph=search.option.graph, layers=search.masked_names,
                                     assign_channels=False, verbose=0)
    if calibration is None:
        return masked
    report = reconstruct(model, masked, calibration, progress=progress_wanted(verbose, len(masked.layers)),
                         channels=channel_map(spaces, kept, masked), nested=True)
    for layer in leaves(masked):  # where pruning_summary reads the refit's errors
        found = report.get(id(layer))
        if found is not None and is_rgp_wrapper(layer):
            layer.data_aware = {**found, **({"calibration": fit} if "error_after" in found else {})}
        elif found is not None and hasattr(layer, "pruned_channels"):
            layer.pruned_channels.update(found)
    return masked


def _check_target(target):
    if isinstance(target, bool) or not isinstance(target, (int, float, np.floating)):
        raise InputTypeError(f"`target` must be a number in (0, 1): the pruned file's latency as a fraction of the "
                             f"dense file's; got {target!r} of type {type(target).__name__}.")
    if not 0 < target < 1:
        raise InputValueError(f"`target` must be in (0, 1) (0.35: the pruned file runs in 35 % of the dense file's "
                              f"time), got {target}.")
    return float(target)


class _LatencyModel:
    """Each segment's predicted time (ms) as a function of the spaces' kept channel counts, interpolated in its
    kept MAC share between the uniform widths `_TIMED_WIDTHS`, all timed once into `table`: the cost model of
    the search (`channels.widths.WidthSearch`); `fixed`, the cost of calling a file."""

    tile = None  # `channels.widths.charged_counts`

    def __init__(self, model, spaces, free, table, verbose):
        self.spaces = spaces
        roles = {call.outputs: role for call, role in zip(spaces.calls.calls, spaces.roles)}
        segments = model_segments(model)
        self.sides = [(segment.calls[0].inputs[0] if segment.calls[0].inputs[0] in spaces.layouts else None,
                       segment.calls[-1].outputs[0], roles.get(segment.calls[0].outputs) == "kernel")
                      for segment in segments]
        uniform = [counts_at(spaces, free, width) for width in _TIMED_WIDTHS]
        timed = [model_segments(thinned_model(model, spaces, _first(counts), {}, "", None, 0))
                 for counts in uniform]
        everything = [segment for widths in timed for segment in widths]
        table.measure(everything, progress=progress_wanted(verbose, len(table.missing(everything))))
        self.fixed = table.call_ms
        self.timed = [(counts, [table.segment_ms(segment.key) for segment in widths])
                      for counts, widths in zip(uniform, timed)]
        self.curves = self._curves()
        self.names = [segment.name for segment in segments]
        self.roots = [self._roots(inputs) | self._roots(outputs) for inputs, outputs, _ in self.sides]
        self.affected = {root: [index for index, roots in enumerate(self.roots) if root in roots] for root in free}

    def _curves(self):
        """Per segment (kept MAC shares, times) of the timed uniform widths, shares as charged (`charged_counts`): a
        file timed at 40 of 64 channels ran as one of 48 on whole tiles."""
        curves = []
        for index in range(len(self.sides)):
            shares = np.array([self.share(index, charged_counts(self.spaces, counts, self.tile))
                               for counts, _ in self.timed])
            times = np.array([times[index] for _, times in self.timed])
            unique, which = np.unique(shares, return_inverse=True)  # widths charged alike: one time, their mean
            curves.append((unique, np.bincount(which, times) / np.bincount(which)))
        return curves

    def on_tiles(self, tile):
        """This cost model charging every count as whole `tile`s (`charged_counts`), its curves read so."""
        tiled = copy.copy(self)
        tiled.tile = tile
        tiled.curves = tiled._curves()
        return tiled

    def _roots(self, key):
        return set() if key is None else {self.spaces.find(segment.space) for segment in self.spaces.layouts[key]}

    def share(self, index, counts):
        inputs, outputs, kernel = self.sides[index]
        share = kept_share(self.spaces, outputs, counts)
        return share * kept_share(self.spaces, inputs, counts) if kernel else share

    def cost(self, index, counts):
        shares, times = self.curves[index]
        return float(np.interp(self.share(index, charged_counts(self.spaces, counts, self.tile)), shares, times))

    def total(self, counts):
        return self.fixed + sum(self.cost(index, counts) for index in range(len(self.sides)))


def _first(counts):
    """root -> its first `counts[root]` channels: a thinned model's shapes (which channels does not matter)."""
    return {root: np.arange(count) for root, count in counts.items()}


def _graphs():
    """RGP_GRAPHS as ring lattices: with degree 2 every connected graph is a cycle (one ASPL), and a fixed one
    keeps the compact segments' table keys the same from call to call."""
    return [RegularGraph.ring_lattice(nodes, degree) for nodes, degree in RGP_GRAPHS]


def _mask_candidates(model, graph, spaces, layers):
    """Layer id -> the Dense / convolution layers `graph` may mask in the plan: channel groups at least
    `_GROUP_WIDTH` wide (their compact kernels run near their MAC share)."""
    selectors = None if layers is None else checked_selectors(model, layers)
    return {id(call.layer): call.layer for call, role in zip(spaces.calls.calls, spaces.roles)
            if role == "kernel" and skip_reason(call.layer, graph) is None
            and prunable_kernel(call.layer)[0] == layer_type(call.layer)[1].kernel
            and (narrow_side(call.layer) or 0) >= _GROUP_WIDTH * graph.nodes
            and (selectors is None or matches(call.layer, selectors))}


def _mask_times(model, graph, candidates, latency, table):
    """Segment index -> the ms of its layer masked by `graph` as a compact kernel (timed into `table`)."""
    masked = prune_regular_graph(model, graph=graph, layers=[layer.name for layer in candidates.values()],
                                 assign_channels=False, verbose=0)
    segments = [segment for segment in model_segments(masked) if is_rgp_wrapper(segment.calls[0].layer)]
    table.measure(segments)
    index = {name: number for number, name in enumerate(latency.names)}
    return {index[segment.calls[0].layer.layer.name]: table.segment_ms(segment.key) for segment in segments}


def _masks(model, spaces, graph, latency, layers, table, calibration):
    """The `MaskOption` of `graph`, or None when no layer qualifies (`_mask_candidates`). A layer's error: its
    least-squares refit's on the dense model's inputs, its channels in their order (the channel assignment RGP
    then runs can only keep more); `spaces`: the model's channel spaces."""
    candidates = _mask_candidates(model, graph, spaces, layers)
    if not candidates:
        return None
    masks = {key: (layer, kernel_mask(graph, getattr(layer, attribute).shape, layout))
             for key, layer in candidates.items() for attribute, layout in [prunable_kernel(layer)]}
    errors = {layer.name: error for key, error in mask_residuals(spaces.calls, masks, calibration).items()
              for layer in [candidates[key]]}
    timed = _mask_times(model, graph, candidates, latency, table)
    return MaskOption(graph, timed, {number: errors[latency.names[number]] for number in timed},
                  {number: latency.names[number] for number in timed})


def time_plan_segments(model, *, threads=1, table=None, cache_dir=None, layers=None, verbose="auto"):
    """Time into a latency table every segment `prune_for_latency` reads for `model` when it does not measure:
    each segment dense and at the uniform widths, and the layers RGP may mask as compact kernels. `table`: a
    path (a new file, or one to extend) or a `LatencyTable`; default this machine's, in `cache_dir`. `rgp
    bench-layers` runs it on the target device, so that a plan made elsewhere with that table measures
    nothing. Returns the table."""
    check_model(model)
    if table is not None and not isinstance(table, LatencyTable):
        table = LatencyTable(table, threads)  # a new file, or one to extend
    table = resolve_table(table, threads, cache_dir)
    spaces = channel_spaces(model)
    free, _ = prunable_spaces(spaces, model, layers)
    latency = _LatencyModel(model, spaces, free, table, verbose)
    for graph in _graphs():
        candidates = _mask_candidates(model, graph, spaces, layers)
        if candidates:
            _mask_times(model, graph, candidates, latency, table)
    predict_latency(model, threads=threads, table=table, verbose=0)
    return table


def _plan_rows(spaces, search, held, predicted):
    """The plan's rows (one per kernel layer, in model order) and, per layer id, its `pruning_summary` note."""
    ms = dict(predicted.segments)
    masked = set(search.masked_names)
    graph = search.option.graph
    rows, notes = [], {}
    for call, role in zip(spaces.calls.calls, spaces.roles):
        if role != "kernel":
            continue
        root = spaces.find(spaces.layouts[call.outputs[0]][0].space)
        width = spaces.width(root)
        kept = search.counts.get(root, width)
        name = call.layer.name
        row = {"layer": name, "width": f"{width} -> {kept}" if kept != width else str(width),
               "graph": f"{graph.nodes}/{graph.degree}" if name in masked else "dense",
               "ms": ms.get(name, ms.get(f"rgp_{name}", 0.0)),
               "sensitivity": float(search.curves[root][width - kept]) if root in search.curves else 0.0,
               "kept_width": "" if root in search.counts else held.get(root, "not prunable")}
        if name in masked:
            row["sensitivity"] = next(search.option.errors[index] for index, masked_name in search.option.names.items()
                                      if masked_name == name)
        rows.append(row)
        notes[id(call.layer)] = {"plan": f"planned {row['ms']:.3f} ms, sensitivity {row['sensitivity']:.4f}"}
    return rows, notes
