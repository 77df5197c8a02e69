"""`pruning_summary`: per-layer parameters and MACs, dense -> kept, for a (pruned) Keras 3 or tf_keras model."""

import math
import warnings

from rgp_keras.graph import RegularGraph, exact_nodes
from rgp_keras.masking.masks import channel_blocks, group_mask, kept_pairs, prunable_kernel
from rgp_keras.masking.selection import layer_macs, narrow_side, skip_reason
from rgp_keras.model_walk import is_rgp_wrapper, is_tf_keras, leaves, to_numpy


class PruningSummary(list):
    """A list of per-layer dicts that prints as a table; `totals` sums the model.

    `graph` is the masks' `RegularGraph` (None when nothing is masked) and
    `kernel_sparsity` the share of each masked kernel it prunes
    (1 - (k + self_loops) / n); `totals` is what the whole model delivers.
    Each row: name, type, graph ("n/k" or ""), params, kept_params, macs,
    kept_macs (per sample, for the model's input shape; None when unknown),
    sparsity (of the layer's parameters), skipped (why it is dense, or ""),
    channels (the narrower side of a maskable kernel, or None),
    data_aware (what data-aware pruning did to the layer, or {}: the shares of
    weight importance kept by the mask before/after channel assignment,
    "importance_before"/"importance_after", why a side kept its channel order,
    "kept_order", and the relative output error before/after reconstruction,
    "error_before"/"error_after", or why it was not refit, "reconstruction";
    what the fit used, "calibration": samples and mixes, and with
    `graph_candidates`, which graph was kept, "graph_choice"),
    width (a layer thinned by `prune_channels`: its channels before -> after,
    "in 64 -> 32, out 128 -> 64", or ""; its params and macs are then the
    original layer's), computed_params and computed_macs (the layer as it is
    now, before any mask), estimated_macs (what its kernel costs in the exported file, in MACs at the dense
    layer's rate: see `estimated_latency`). `criteria` names how `prune_channels` chose channels; a layer
    `prune_for_latency` planned has its planned ms and sensitivity in data_aware["plan"].
    """

    graph = None
    self_loops = False

    @property
    def kernel_sparsity(self):
        return None if self.graph is None else 1 - (self.graph.degree + self.self_loops) / self.graph.nodes

    @property
    def totals(self):
        params = sum(row["params"] for row in self)
        kept = sum(row["kept_params"] for row in self)
        known = [row for row in self if row["macs"] is not None]
        macs = sum(row["macs"] for row in known)
        kept_macs = sum(row["kept_macs"] for row in known)
        return {
            "params": params,
            "kept_params": kept,
            "macs": macs,
            "kept_macs": kept_macs,
            "sparsity": 1 - kept / params if params else 0.0,
            "mac_reduction": 1 - kept_macs / macs if macs else 0.0,
            "computed_params": sum(row["computed_params"] for row in self),
            "computed_macs": sum(row["computed_macs"] for row in known),
        }

    @property
    def estimated_latency(self):
        """The LiteRT latency of `export_tflite`'s float file / the dense model's file, estimated from each
        layer's MACs and, for a masked layer, the layout the export picks (its x86 XNNPACK fit, one thread);
        None for a tf_keras model or unknown MACs. Elementwise ops and pooling are not counted:
        `predict_latency` measures instead."""
        known = [row for row in self if row["macs"] is not None]
        if not known or any(row["estimated_macs"] is None for row in known):
            return None
        return sum(row["estimated_macs"] for row in known) / max(sum(row["macs"] for row in known), 1)

    @property
    def criteria(self):
        return sorted({row["data_aware"]["channels"] for row in self if row["data_aware"].get("channels")})

    def __str__(self):
        widths = any(row["width"] for row in self)
        header = ("layer", "type", *(("width",) if widths else ()), "graph", "params", "kept", "MACs", "kept MACs",
                  "sparsity", "note")
        data_aware = any(set(row["data_aware"]) - {"channels"} for row in self)
        if data_aware:
            header += ("data-aware pruning",)
        lines = [
            (
                row["name"], row["type"], *((row["width"],) if widths else ()), row["graph"], f"{row['params']:,}",
                f"{row['kept_params']:,}",
                _count(row["macs"]), _count(row["kept_macs"]), f"{100 * row['sparsity']:.1f}%", row["skipped"],
                *((_describe(row["data_aware"]),) if data_aware else ()),
            )
            for row in self
        ]
        totals = self.totals
        lines.append(
            ("total", "", *(("",) if widths else ()), "", f"{totals['params']:,}", f"{totals['kept_params']:,}",
             _count(totals["macs"]),
             _count(totals["kept_macs"]), f"{100 * totals['sparsity']:.1f}%",
             f"MACs -{100 * totals['mac_reduction']:.1f}%", *(("",) if data_aware else ()))
        )
        widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
        render = lambda line: "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        table = [render(header), render(["-" * w for w in widths]), *map(render, lines)]
        fits = sorted({row["data_aware"]["calibration"] for row in self if row["data_aware"].get("calibration")})
        if fits:
            table.append(f"reconstruction fit on {' / '.join(fits)}")
        choices = sorted({row["data_aware"]["graph_choice"] for row in self if row["data_aware"].get("graph_choice")})
        table.extend(choices)
        table.extend(f"channels chosen by {criterion}" for criterion in self.criteria)
        if self.graph is not None:
            table.append(
                f"graph {self.graph.nodes}/{self.graph.degree}: {100 * self.kernel_sparsity:.1f}% of each masked "
                f"kernel "
                f"pruned; model: {100 * totals['sparsity']:.1f}% of parameters, "
                f"{100 * totals['mac_reduction']:.1f}% of MACs"
            )
        latency = self.estimated_latency
        if latency is not None and totals["mac_reduction"] > 0:
            table.append(f"estimated LiteRT latency {latency:.2f}x the dense file's (1 thread, from MACs and the "
                         "compact layouts export_tflite picks; predict_latency measures it)")
        return "\n".join(table)


def pruning_summary(model):
    """Per-layer parameters and MACs, dense -> kept, of a Keras 3 or tf_keras model (pruned or not).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(64),
    ...                           keras.layers.Dense(4)])
    >>> from rgp_keras.prune import prune_regular_graph
    >>> summary = pruning_summary(prune_regular_graph(model, degree=4, nodes=16, seed=0))
    >>> summary[1]["graph"], summary[1]["kept_params"]
    ('16/4', 1088)
    """
    counted = [layer for layer in leaves(model) if layer.count_params() > 0]
    wrappers = [layer for layer in counted if is_rgp_wrapper(layer)]
    graph = wrappers[0].graph if wrappers else None
    prunable = [layer for layer in counted if is_rgp_wrapper(layer) or prunable_kernel(layer)[0]]
    rows = PruningSummary()
    rows.graph = graph
    rows.self_loops = bool(wrappers and wrappers[0].self_loops)
    tf_keras = is_tf_keras(model)
    for layer in counted:
        inner = layer.layer if is_rgp_wrapper(layer) else layer
        params = inner.count_params()
        macs, kernel_macs = layer_macs(layer, inner)
        stripped = None if is_rgp_wrapper(layer) else _stripped_blocks(inner)
        if is_rgp_wrapper(layer):
            density, kernel_size = float(layer.density), math.prod(layer.kernel.shape)
            row_graph, skipped = f"{layer.graph.nodes}/{layer.graph.degree}", ""
        elif stripped is not None:
            blocks, kernel = stripped
            density, kernel_size = float(kept_pairs(kernel).mean()), kernel.size
            row_graph = f"{len(blocks)}/{int(blocks.sum(axis=0).max())}"
            skipped = "stripped: zeros in channel-group blocks"
        else:
            density, kernel_size, row_graph = 1.0, 0, ""
            skipped = _why_dense(layer, graph, prunable)
        kept = params - kernel_size + int(round(density * kernel_size))
        kept_macs = None if macs is None else macs - int(round((kernel_macs or 0) * (1 - density)))
        estimated_macs = None if macs is None or tf_keras else macs
        if estimated_macs is not None and row_graph:
            blocks = group_mask(layer.graph, layer.self_loops) if is_rgp_wrapper(layer) else stripped[0]
            estimated_macs = _exported_macs(layer, inner, blocks)
        report = dict(getattr(layer, "data_aware", None) or {})
        thinned = getattr(inner, "pruned_channels", None) or {}
        if thinned:  # made by prune_channels: counted against the layer it was made from
            report = {**{key: thinned[key] for key in ("error_before", "error_after", "reconstruction", "channels",
                                                       "plan") if key in thinned}, **report}
            if not row_graph:
                skipped = f"width kept: {thinned['kept_width']}" if thinned["kept_width"] else ""
        rows.append(
            {
                "name": inner.name,
                "type": type(inner).__name__,
                "width": thinned.get("width", ""),
                "graph": row_graph,
                "params": thinned.get("params", params),
                "kept_params": kept,
                "macs": thinned.get("macs", macs) if macs is not None else None,
                "kept_macs": kept_macs,
                "sparsity": 1 - kept / thinned.get("params", params),
                "skipped": skipped,
                "channels": narrow_side(inner),
                "data_aware": report,
                "computed_params": params,
                "computed_macs": macs,
                "estimated_macs": estimated_macs,
            }
        )
    return rows


def warn_if_short(summary, share=0.1):
    """Warn when layers too narrow for the graph stay dense and hold >= `share` of the MACs of the model
    `summary` (its `pruning_summary`) describes.

    The warning gives the sparsity asked for and delivered, names those layers
    and the `nodes` that would prune them at the same density.
    """
    graph = summary.graph
    if graph is None:
        return
    density = 1 - summary.kernel_sparsity
    # Layers narrower than the graph that a smaller graph of the same density could prune.
    narrow = [row for row in summary if not row["graph"] and row["channels"] and row["channels"] < graph.nodes
              and exact_nodes(density, row["channels"], summary.self_loops)]
    weight = "macs" if all(row["macs"] is not None for row in summary) else "params"
    total = sum(row[weight] for row in summary)
    held = sum(row[weight] for row in narrow)
    if not total or held < share * total:
        return
    totals = summary.totals
    layers = ", ".join(f"{row['name']} ({row['channels']} channels)" for row in narrow[:6]) + (
        ", ..." if len(narrow) > 6 else "")
    nodes = exact_nodes(density, min(row["channels"] for row in narrow), summary.self_loops)
    warnings.warn(
        f"Asked for {100 * summary.kernel_sparsity:.1f}% sparsity (graph {graph.nodes}/{graph.degree}), delivered "
        f"{100 * totals['sparsity']:.1f}% of the parameters and {100 * totals['mac_reduction']:.1f}% of the MACs: "
        f"{len(narrow)} layer(s) holding {100 * held / total:.0f}% of the "
        f"{'MACs' if weight == 'macs' else 'parameters'}"
        f" have fewer channels on a side than the graph's {graph.nodes} nodes and stay dense: {layers}. "
        f"nodes={nodes} would prune them at the same density; nodes='auto' picks the node count from the layers' "
        "widths.",
        stacklevel=3,
    )


def warn_if_no_faster(model, summary):
    """Warn when `model`'s masks are estimated (`summary.estimated_latency`, its `pruning_summary`) to run no
    faster than those of a lower sparsity with wider channel groups: the same degree on half the nodes, or
    twice the degree."""
    graph, latency = summary.graph, summary.estimated_latency
    if graph is None or latency is None:
        return
    wrappers = [layer for layer in leaves(model) if is_rgp_wrapper(layer)]
    lower = [(nodes, degree) for nodes, degree in ((graph.nodes // 2, graph.degree), (graph.nodes, 2 * graph.degree))
             if degree + summary.self_loops < nodes and nodes * degree % 2 == 0 and nodes >= 3]
    options = [(_estimated_with(summary, wrappers, RegularGraph.ring_lattice(*shape) if shape[1] % 2 == 0 else
                                RegularGraph.random(*shape, seed=0)), shape) for shape in lower]
    # (where neither gains speed, the summary's estimate says so: too small a model to warn about)
    if not options or min(options)[0] > latency + 0.005 or min(options)[0] > 0.95:
        return
    other, (nodes, degree) = min(options)
    narrowest = min(row["channels"] for row in summary if row["graph"] and row["channels"])
    sparsity = lambda n, k: 1 - (k + summary.self_loops) / n
    warnings.warn(
        f"Sparsity {sparsity(graph.nodes, graph.degree):.4g} (graph {graph.nodes}/{graph.degree}) is estimated to run "
        f"at {latency:.2f}x the dense file's latency, no faster than {sparsity(nodes, degree):.4g} would (graph "
        f"{nodes}/{degree}: {other:.2f}x): channel groups of {narrowest // graph.nodes} channel(s) are too narrow for "
        "XNNPACK's grouped kernels, which run near their MAC share from 16 channels. Fewer channels go further "
        "(prune_channels); prune_for_latency plans widths and masks per layer from measured latencies.",
        stacklevel=4,
    )


def _estimated_with(summary, wrappers, graph):
    """`summary.estimated_latency` were its masked layers masked by `graph` instead."""
    by_name = {layer.layer.name: layer for layer in wrappers}
    known = [row for row in summary if row["macs"] is not None]
    total = 0.0
    for row in known:
        layer = by_name.get(row["name"])
        total += row["estimated_macs"] if layer is None else _exported_macs(layer, layer.layer,
                                                                            group_mask(graph, layer.self_loops))
    return total / max(sum(row["macs"] for row in known), 1)


def _exported_macs(outer, inner, blocks):
    """A masked layer's MACs per sample as `export_tflite` writes it with channel-group `blocks`: its kernel's
    at the estimated latency ratio of the layout the export picks (1 where it stays dense)."""
    from rgp_keras.export._latency import output_positions
    from rgp_keras.export._rewrite import estimated_compact_ratio

    macs, kernel_macs = layer_macs(outer, inner)
    return macs - kernel_macs * (1 - estimated_compact_ratio(inner, blocks, positions=output_positions(outer)))


def _stripped_blocks(layer):
    """(blocks, kernel) when a plain layer's kernel zeros form RGP's channel-group blocks (a stripped model)."""
    attribute, layout = prunable_kernel(layer)
    if attribute is None or layout == "conv_transpose" or getattr(layer, attribute, None) is None:
        return None
    kernel = to_numpy(getattr(layer, attribute))
    blocks = channel_blocks(kernel)
    return None if blocks is None else (blocks, kernel)


def _describe(report):
    parts = []
    if "importance_after" in report:
        parts.append(f"importance kept {report['importance_before']:.3f} -> {report['importance_after']:.3f}")
    if report.get("kept_order"):
        parts.append(report["kept_order"])
    if "error_after" in report:
        parts.append(f"output error {report['error_before']:.3f} -> {report['error_after']:.3f}")
    if report.get("reconstruction"):
        parts.append(report["reconstruction"])
    if report.get("plan"):
        parts.append(report["plan"])
    return "; ".join(parts)


def _why_dense(layer, graph, prunable):
    if graph is None:
        attribute, reason = prunable_kernel(layer)
        return "not pruned" if attribute else reason
    reason = skip_reason(layer, graph)
    if reason:
        return reason
    if layer is prunable[0]:
        return "first prunable layer, kept dense"
    if layer is prunable[-1]:
        return "last prunable layer, kept dense"
    return "not selected"


def _count(value):
    if value is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


__all__ = ["PruningSummary", "pruning_summary"]
