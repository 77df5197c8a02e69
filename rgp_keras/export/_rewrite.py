"""The Keras-level compact rewrite: masked layers -> `CompactKernel`s, BatchNormalization folded where safe."""

import hashlib
import json
import math

import keras
import numpy as np

from rgp_keras._checks import check_int
from rgp_keras.errors import InputValueError
from rgp_keras.export._kernels import KERNELS, LAYOUTS, CompactKernel, FoldedAway
from rgp_keras.export._latency import MAX_LATENCY_RATIO, estimated_latency_ratios, output_positions
from rgp_keras.masking.layer_types import REGISTRY, layer_type
from rgp_keras.masking.masks import channel_blocks, kept_pairs, prunable_kernel
from rgp_keras.masking.selection import layer_macs
from rgp_keras.model_walk import clone_layer, clone_model, paired_leaves, to_numpy
from rgp_keras.plan.latency import describe


def compact_model(model, layout="auto", *, int8=False, threads=1, latency_table=None):
    """`(compact model, {name: layout}, {name: why not})` for a stripped Keras 3 model.

    Layers whose kernel has a channel-group block structure with density < 1
    become `CompactKernel` layers computing the same outputs. With
    `layout="auto"` each takes the layout estimated fastest, and a layer
    whose estimate is not clearly below the dense layer's stays as it is;
    with "measured" the same, from the layer's layouts and its dense form
    each converted alone (batch 1) and timed on LiteRT at `threads`, through
    `latency_table` (a `rgp_keras.plan.latency.LatencyTable`: what it holds
    is not timed again; float files only);
    "gather", "slices" or "scatter" force that layout on every such layer
    where it applies ("scatter" needs input channels divisible by n and every output
    group reading equally many groups; other layers get "gather"). The rest
    are copied unchanged. A BatchNormalization that alone reads a compacted
    layer's output is folded into the compact kernel (it becomes a
    `FoldedAway` pass-through).

    `threads` is the CPU thread count the file will run with: "auto"
    weighs the layouts' single-threaded data moves against GEMMs shared out
    over that many threads.

    `int8=True` (for full-integer files) leaves "scatter" out of "auto":
    LiteRT's int8 SUM and the extra requantized tensors made scattered
    layers slower than int8 dense ones (benchmarks/export_bench.py).
    """
    if layout not in LAYOUTS:
        raise InputValueError(f"`layout` must be one of {LAYOUTS}, got {layout!r}.")
    threads = check_int("threads", threads, minimum=1)
    if layout == "measured" and (int8 or latency_table is None):
        raise InputValueError('layout="measured" times float files through a latency table: it needs '
                              "`latency_table` and int8=False (int8 files: layout=\"auto\").")
    chooses = layout in ("auto", "measured")
    compacted, not_compacted, folded = {}, {}, set()
    tapped = _output_ids(model)

    def rewrite(layer):
        if id(layer) in folded:
            return FoldedAway(name=layer.name)
        kernel = masked_kernel_of(layer)
        if kernel is not None:
            reason = _why_not_compact(layer)
            blocks = None if reason else channel_blocks(kernel)
            if blocks is not None:
                ratios = estimated_latency_ratios(layer, blocks, threads)
                if int8 and layout == "auto":
                    ratios.pop("scatter", None)
                if layout == "measured":
                    ratios = measured_latency_ratios(layer, blocks, ratios, latency_table)
                chosen = min(ratios, key=ratios.get) if chooses else layout
                chosen = chosen if chosen in ratios else "gather"
                if not chooses or ratios[chosen] < MAX_LATENCY_RATIO:
                    compacted[layer.name] = chosen
                    norm = _batch_norm_after(layer, tapped)
                    if norm is None:
                        return KERNELS[chosen](layer, blocks)
                    folded.add(id(norm))
                    return KERNELS[chosen](_fold_batch_norm(layer, norm), blocks)
                reason = (_too_slow(layer, blocks, ratios, chosen, threads) if layout != "measured" else
                          f"compact kernel measured {ratios[chosen]:.2f}x the dense layer's latency alone with "
                          f"{threads} thread(s) ({chosen} layout, the fastest)")
            if np.any(kernel == 0):
                not_compacted[layer.name] = (reason or "kernel zeros have no channel-group block structure") + (
                    _dense_cost(layer, kernel))
        return clone_layer(layer)

    clone = clone_model(model, rewrite)
    for original, new in paired_leaves(model, clone):
        if not isinstance(new, CompactKernel) and new.weights:
            new.set_weights(original.get_weights())
    return clone, compacted, not_compacted


def measured_latency_ratios(layer, blocks, layouts, table):
    """`{layout: measured latency / dense latency}` of a masked layer's compact `layouts`: the layer alone
    (batch 1) in each layout and dense-shaped, each a file timed through `table` (kept there, keyed by the
    layer's config, input shape, blocks and layout), less what calling a file costs."""

    shape = (1, *layer.input.shape[1:])
    base = [describe(layer), shape, hashlib.sha1(np.packbits(blocks).tobytes()).hexdigest(), blocks.shape]
    alone = lambda made: keras.Sequential([keras.Input(batch_shape=shape), made])
    wanted = [(json.dumps(["layer alone", *base, name], sort_keys=True, default=str), f"{layer.name} {name}",
               (lambda name=name: alone(KERNELS[name](layer, blocks) if name != "dense" else clone_layer(layer))))
              for name in ("dense", *layouts)]
    dense, *times = (max(ms - table.call_ms, 1e-6) for ms in table.times(wanted, what="layer time(s)"))
    return {name: ms / dense for name, ms in zip(layouts, times)}


def estimated_compact_ratio(layer, blocks, threads=1, positions=None):
    """A masked layer's estimated latency / its dense latency as `compact_model` (layout "auto") writes it: its
    best layout's, or 1.0 where it leaves the layer dense (a layout it cannot write, or none estimated below
    MAX_LATENCY_RATIO)."""
    if _why_not_compact(layer):
        return 1.0
    best = min(estimated_latency_ratios(layer, blocks, threads, positions).values())
    return best if best < MAX_LATENCY_RATIO else 1.0


def masked_kernel_of(layer):
    """The channel-pair kernel RGP masks in `layer` (a numpy array), or None for a layer without one."""
    # a keras.ops operation in a functional model (`x + 3.0`) holds no weights and has no count_params
    attribute = prunable_kernel(layer)[0] if getattr(layer, "weights", None) else None
    return None if attribute is None else to_numpy(getattr(layer, attribute))


def _dense_cost(layer, kernel):
    """What leaving a masked layer dense-shaped costs, for the report."""
    _, kernel_macs = layer_macs(layer, layer)
    zeros = 1 - float(kept_pairs(kernel).mean())
    if not kernel_macs or not zeros:
        return ""
    return f"; so its {kernel_macs:,} kernel MACs per sample all run, {100 * zeros:.0f}% of them on zero weights"


def _too_slow(layer, blocks, ratios, chosen, threads):
    """Why `compact_model` left a layer whose best layout is estimated too slow as it is."""
    one_thread = estimated_latency_ratios(layer, blocks)
    positions = output_positions(layer)
    if threads > 1 and min(one_thread[name] for name in ratios) < MAX_LATENCY_RATIO:
        why = f"faster with one thread, but its channel gathers run on one thread and dense GEMMs on {threads}"
    elif min(estimated_latency_ratios(layer, blocks, threads, positions=math.inf).values()) < MAX_LATENCY_RATIO:
        why = f"{positions} output position(s) per call: picking its input channels costs more than the MACs it saves"
    else:
        why = f"groups of {min(layer.kernel.shape[-2:]) // len(blocks)} channels are too small for XNNPACK's tiles"
    return (f"compact kernel estimated {ratios[chosen]:.2f}x the dense latency with {threads} thread(s) "
            f"({chosen} layout; {why})")


def _output_ids(model):
    """ids of the output tensors of `model` and of every model nested in it."""
    ids = {id(tensor) for tensor in keras.tree.flatten(model.outputs)}
    for layer in model.layers:
        if isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            ids |= _output_ids(layer)
    return ids


def _batch_norm_after(layer, tapped):
    """The BatchNormalization (on the channel axis) that alone reads `layer`'s output, if any.

    The converter folds such a layer into a convolution it follows directly;
    after a compact kernel's partial sums it cannot, so `compact_model` folds
    it first (the scatter layout would otherwise pay a MUL and an ADD over
    its output). An output that is also a model's output (`tapped`) is read
    there too, so its BatchNormalization is not folded.
    """
    if len(layer._inbound_nodes) != 1 or id(layer.output) in tapped:
        return None
    nodes = layer._outbound_nodes
    norm = nodes[0].operation if len(nodes) == 1 else None
    if not isinstance(norm, keras.layers.BatchNormalization) or len(norm._inbound_nodes) != 1:
        return None
    linear = layer.get_config().get("activation") in (None, "linear")
    return norm if linear and norm.axis in (-1, len(layer.output.shape) - 1) else None


def _fold_batch_norm(layer, norm):
    """A copy of `layer` computing `norm(layer(x))` (inference statistics)."""
    value = to_numpy
    scale = value(norm.moving_variance) + norm.epsilon
    scale = (value(norm.gamma) if norm.scale else 1.0) / np.sqrt(scale)
    bias = value(layer.bias) if layer.use_bias else 0.0
    shift = (bias - value(norm.moving_mean)) * scale + (value(norm.beta) if norm.center else 0.0)
    folded = layer.__class__.from_config({**layer.get_config(), "use_bias": True})
    folded.build(layer.input.shape)
    folded.set_weights([value(layer.kernel) * scale, shift.astype(layer.kernel.dtype)])
    return folded


def _why_not_compact(layer):
    name, kind = layer_type(layer)
    if name == "Conv3D":
        return ("Conv3D: LiteRT's CONV_3D has no groups, so a grouped compact kernel cannot run there; "
                "kept dense-shaped, the zeros sparse-encoded")
    if kind is None or kind.compact_as is None:
        covered = ", ".join(name for name, other in REGISTRY.items() if other.compact_as)
        return f"{type(layer).__name__}: compact rewrite covers {covered} only"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first layout: compact rewrite needs channels_last"
    return None
