"""`pruning_summary`: per-layer parameters and MACs, dense -> kept, for a (pruned) Keras 3 or tf_keras model."""

import math

from keras import ops

from rgp_keras.masks import prunable_kernel
from rgp_keras.model_graph import is_rgp_wrapper, leaves
from rgp_keras.prune import skip_reason


class PruningSummary(list):
    """A list of per-layer dicts that prints as a table; `totals` sums the model.

    Each row: name, type, graph ("n/k" or ""), params, kept_params, macs,
    kept_macs (per sample, for the model's input shape; None when unknown),
    sparsity (of the layer's parameters), skipped (why it is dense, or ""),
    data_aware (what data-aware pruning did to the layer, or {}: the shares of
    weight importance kept by the mask before/after channel assignment,
    "importance_before"/"importance_after", why a side kept its channel order,
    "kept_order", and the relative output error before/after reconstruction,
    "error_before"/"error_after", or why it was not refit, "reconstruction").
    """

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
        }

    def __str__(self):
        header = ("layer", "type", "graph", "params", "kept", "MACs", "kept MACs", "sparsity", "note")
        data_aware = any(row["data_aware"] for row in self)
        if data_aware:
            header += ("data-aware pruning",)
        lines = [
            (
                row["name"], row["type"], row["graph"], f"{row['params']:,}", f"{row['kept_params']:,}",
                _count(row["macs"]), _count(row["kept_macs"]), f"{100 * row['sparsity']:.1f}%", row["skipped"],
                *((_describe(row["data_aware"]),) if data_aware else ()),
            )
            for row in self
        ]
        totals = self.totals
        lines.append(
            ("total", "", "", f"{totals['params']:,}", f"{totals['kept_params']:,}", _count(totals["macs"]),
             _count(totals["kept_macs"]), f"{100 * totals['sparsity']:.1f}%",
             f"MACs -{100 * totals['mac_reduction']:.1f}%", *(("",) if data_aware else ()))
        )
        widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
        render = lambda line: "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


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
    for layer in counted:
        inner = layer.layer if is_rgp_wrapper(layer) else layer
        params = inner.count_params()
        macs, kernel_macs = _macs(layer, inner)
        if is_rgp_wrapper(layer):
            density = float(ops.convert_to_numpy(layer.density))
            kernel_size = math.prod(layer.kernel.shape)
            kept = params - kernel_size + int(round(density * kernel_size))
            kept_macs = None if macs is None else macs - int(round(kernel_macs * (1 - density)))
            row_graph, skipped = f"{layer.graph.nodes}/{layer.graph.degree}", ""
        else:
            kept, kept_macs, row_graph = params, macs, ""
            skipped = _why_dense(layer, graph, prunable)
        rows.append(
            {
                "name": inner.name,
                "type": type(inner).__name__,
                "graph": row_graph,
                "params": params,
                "kept_params": kept,
                "macs": macs,
                "kept_macs": kept_macs,
                "sparsity": 1 - kept / params,
                "skipped": skipped,
                "data_aware": dict(getattr(layer, "data_aware", None) or {}),
            }
        )
    return rows


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


def _macs(outer, layer):
    """(MACs per sample, the part done by the maskable kernel) or (None, None) when unknown."""
    try:
        output_shape = outer.output.shape
        input_shape = outer.input.shape
    except (AttributeError, ValueError):
        return None, None
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    positions = lambda shape: math.prod(shape[2:] if channels_first else shape[1:-1])
    kernel_attribute, layout = prunable_kernel(layer)
    total = kernel_part = 0
    for weight in layer.trainable_weights:
        # Keras 3 variables have a path, tf_keras ones a name like "conv2d/kernel:0"
        name = getattr(weight, "path", weight.name).split("/")[-1].split(":")[0]
        if name in ("bias", "gamma", "beta") or len(weight.shape) < 2:
            continue
        size = math.prod(weight.shape)
        if layout == "conv_transpose":
            count = size * positions(input_shape)
        elif layout == "dense":
            count = size * math.prod(output_shape[1:-1])
        else:
            count = size * positions(output_shape)
        total += count
        if kernel_attribute and name == kernel_attribute:
            kernel_part = count
    return int(total), int(kernel_part)


def _count(value):
    if value is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


__all__ = ["PruningSummary", "pruning_summary"]
