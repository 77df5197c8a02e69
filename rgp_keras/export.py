"""LiteRT (.tflite) export of RGP models: compact kernels that hold and compute only the kept weights.

A masked layer's kernel is zero outside the (input group, output group) blocks
of its graph: every output group reads k input groups and every input group
feeds k output groups. Two exactly equivalent compact layouts hold k/n of the
weights and run k/n of the MACs:

- "gather": gather, for each output group, the input channels of its k
  neighbour groups (one GATHER), then one grouped convolution with
  `groups = n` (per group k*g_in -> g_out channels);
- "scatter": one grouped convolution over the input as it is (per group
  g_in -> k*g_out channels: input group i's contribution to each of its k
  output groups), then gather those partial sums by output group and add
  the k of each (GATHER + SUM).

XNNPACK's GEMM kernels fill 16 output channels at a time on x86 (8 on Arm),
so narrow output groups waste most of each tile in the gather layout; the
scatter layout widens the tile k-fold at the price of moving k partial
sums per output. `compact_model` picks per layer by an estimate fitted to
measurements (benchmarks/layout_choice.py), and keeps a layer sparse when
neither layout is estimated clearly faster than the dense one. The block
structure is read from the kernel's zeros, so pruned and stripped models
export alike.
"""

import collections
import gzip
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras.src.models.functional import Functional

from rgp_keras._checks import check_int
from rgp_keras._files import normal_file_mode
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.masks import PRUNABLE, channel_blocks, channel_groups, kept_pairs, prunable_kernel
from rgp_keras.model_graph import clone_layer, clone_model, leaves, paired_leaves, reject_tf_keras, to_numpy
from rgp_keras.prune import strip_pruning
from rgp_keras.selection import layer_macs
from rgp_keras.summary import pruning_summary
from rgp_keras.wrapper import RegularGraphPruning

QUANTIZE = (None, "dynamic", "float16", "int8")
_CONV_CLASS = {"Dense": keras.layers.Conv2D, "Conv1D": keras.layers.Conv1D, "Conv2D": keras.layers.Conv2D,
               "Conv3D": keras.layers.Conv3D}
_CALIBRATION_SAMPLES = 200
LAYOUTS = ("auto", "gather", "scatter")
# Latency estimate, fitted to single layers in LiteRT 2.3's XNNPACK on x86
# AVX2, one thread (benchmarks/layout_choice.py checks it per layer): a GEMM
# runs at full speed with >= 16 output channels per group (fewer use that
# fraction of the tile) and loses speed below ~32 reduction terms (about
# with the square root); every float a layout moves (transposes, gathers,
# partial sums) costs about 10 full-speed MACs. With more threads the GEMMs
# share out and the moves do not (LiteRT runs GATHER outside XNNPACK): a
# move costs threads x 10 MACs of one thread's time (layout_choice.py
# --threads 2 checks it). A layer is compacted when its best layout is
# estimated below 0.9 x dense.
_TILE_CHANNELS = 16
_FULL_REDUCTION = 32
_MACS_PER_FLOAT_MOVED = 10
_MAX_LATENCY_RATIO = 0.9


@dataclass(frozen=True)
class ExportReport:
    """What `export_tflite` wrote and what it gained.

    `params`/`macs` are those of the exported computation (per sample), beside
    the dense model's; `nonzero_params` counts the non-zero weights among
    `params`. `compacted` maps the layers rewritten to compact kernels to
    their layout ("gather" or "scatter"); `not_compacted` maps the other
    masked-looking layers to the reason.
    """

    path: str
    compact: bool
    quantize: str | None
    size_bytes: int
    gzip_bytes: int
    dense_params: int
    params: int
    nonzero_params: int
    dense_macs: int
    macs: int
    compacted: dict = field(default_factory=dict)
    not_compacted: dict = field(default_factory=dict)
    notes: tuple = ()

    def __str__(self):
        ratio = lambda new, old: f"{new / old:.3f}x" if old else "-"
        rows = [
            ("file", self.path),
            ("format", f"{'compact' if self.compact else 'sparse'}, {self.quantize or 'float32'}"),
            ("size", f"{self.size_bytes:,} B (gzip {self.gzip_bytes:,} B)"),
            ("params", f"{self.dense_params:,} -> {self.params:,} ({ratio(self.params, self.dense_params)}), "
                       f"non-zero {self.nonzero_params:,}"),
            ("MACs/sample", f"{self.dense_macs:,} -> {self.macs:,} ({ratio(self.macs, self.dense_macs)})"),
            ("compacted", f"{len(self.compacted)} layers" + _layout_counts(self.compacted)),
        ]
        rows += [(f"  kept as is: {name}", reason) for name, reason in self.not_compacted.items()]
        rows += [("note", note) for note in self.notes]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _layout_counts(compacted):
    counts = collections.Counter(compacted.values())
    listed = ", ".join(f"{counts[layout]} {layout}" for layout in LAYOUTS[1:] if counts[layout])
    return f" ({listed})" if listed else ""


def export_tflite(
    model, path, *, compact=True, quantize=None, representative_data=None, layout="auto", threads=1
):
    """Write a pruned (or stripped) Keras 3 model as a .tflite file for LiteRT.

    Args:
        model: a model from `prune_regular_graph`, or its `strip_pruning` result.
        path: the .tflite file to write (written atomically: on error nothing
            is left behind and an existing file is untouched).
        compact: rewrite each masked Dense/Conv1D/Conv2D/Conv3D into a grouped
            convolution holding only the kept weights (fewer bytes and MACs),
            in the layout estimated fastest (see `compact_model`). With
            `compact=False` the stripped model is converted with the
            converter's sparsity optimisation (zeros still computed).
        quantize: None (float32), "dynamic" (int8 weights), "float16", or
            "int8" (full integer; needs `representative_data`).
        representative_data: calibration inputs for "int8": an array of input
            samples `(N, *input_shape)` (a few hundred real samples suffice).
        layout: compact layout per layer: "auto" (estimated fastest on x86
            XNNPACK; layers not estimated faster than dense stay sparse), or
            "gather"/"scatter" forced wherever it applies, e.g. after timing
            both with `benchmark_tflite` on the target device.
        threads: CPU threads the file will run with (LiteRT `num_threads`);
            "auto" keeps more layers dense for more threads, since dense
            GEMMs share out over threads and the compact layouts' channel
            gathers do not.

    Returns:
        An `ExportReport` (sizes, params and MACs before/after, which layers
        were compacted).

    Example:
    >>> report = export_tflite(pruned_model, "model.tflite")  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    reject_tf_keras(model, "export_tflite")
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"`model` must be a Keras 3 model, got {type(model).__name__}.")
    if quantize not in QUANTIZE:
        raise InputValueError(f"`quantize` must be one of {QUANTIZE}, got {quantize!r}.")
    if layout not in LAYOUTS:
        raise InputValueError(f"`layout` must be one of {LAYOUTS}, got {layout!r}.")
    if layout != "auto" and not compact:
        raise InputValueError(f"`layout` chooses compact kernels; it needs compact=True, got layout={layout!r}.")
    threads = check_int("threads", threads, minimum=1)
    if threads != 1 and not compact:
        raise InputValueError(f"`threads` chooses compact layouts; it needs compact=True, got threads={threads}.")
    subclassed = not isinstance(model, (keras.Sequential, Functional))
    if subclassed and compact:
        raise InputTypeError(
            f"Compact kernels rewrite a model layer by layer, which the subclassed model {model.name!r} "
            f"({type(model).__name__}) does not allow. Export it with compact=False (its RGP wrappers compute with "
            "exact zeros, stored sparsely; no speed-up), or build the architecture as a Sequential or functional "
            "model for the compact speed-up."
        )
    samples = _calibration_samples(model, quantize, representative_data)
    path = _writable_path(path)

    wrapped = any(isinstance(layer, RegularGraphPruning) for layer in leaves(model))
    stripped = strip_pruning(model) if wrapped and not subclassed else model
    exported, compacted, not_compacted = stripped, {}, {}
    if compact:
        exported, compacted, not_compacted = compact_model(
            stripped, layout, int8=quantize == "int8", threads=threads
        )
    options, notes = _converter_options(exported, quantize, samples)
    _write_atomically(exported, path, options)

    dense, after = pruning_summary(model).totals, pruning_summary(exported).totals
    data = path.read_bytes()
    return ExportReport(
        path=str(path),
        compact=compact,
        quantize=quantize,
        size_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9)),
        dense_params=dense["params"],
        params=after["params"],
        nonzero_params=sum(int(np.count_nonzero(to_numpy(w))) for w in _layer_weights(exported)),
        dense_macs=dense["macs"],
        macs=after["macs"],
        compacted=dict(compacted),
        not_compacted=dict(not_compacted),
        notes=tuple(notes),
    )


def _layer_weights(model):
    """The model's weights without RGP masks (a subclassed model is exported with its wrappers)."""
    for layer in leaves(model):
        yield from (layer.layer.weights if isinstance(layer, RegularGraphPruning) else layer.weights)


def compact_model(model, layout="auto", *, int8=False, threads=1):
    """`(compact model, {name: layout}, {name: why not})` for a stripped Keras 3 model.

    Layers whose kernel has a channel-group block structure with density < 1
    become `CompactKernel` layers computing the same outputs. With
    `layout="auto"` each takes the layout estimated fastest, and a layer
    whose estimate is not clearly below the dense layer's stays as it is;
    "gather" or "scatter" force that layout on every such layer where it
    applies ("scatter" needs input channels divisible by n and every output
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
    compacted, not_compacted, folded = {}, {}, set()
    tapped = _output_ids(model)

    def rewrite(layer):
        if id(layer) in folded:
            return FoldedAway(name=layer.name)
        if layer.count_params() and prunable_kernel(layer)[0]:
            reason = _why_not_compact(layer)
            blocks = None if reason else channel_blocks(to_numpy(layer.kernel))
            if blocks is not None:
                ratios = estimated_latency_ratios(layer, blocks, threads)
                if int8 and layout == "auto":
                    ratios.pop("scatter", None)
                chosen = min(ratios, key=ratios.get) if layout == "auto" else layout
                chosen = chosen if chosen in ratios else "gather"
                if layout != "auto" or ratios[chosen] < _MAX_LATENCY_RATIO:
                    compacted[layer.name] = chosen
                    norm = _batch_norm_after(layer, tapped)
                    if norm is None:
                        return CompactKernel(layer, blocks, chosen)
                    folded.add(id(norm))
                    return CompactKernel(_fold_batch_norm(layer, norm), blocks, chosen)
                reason = _too_slow(layer, blocks, ratios, chosen, threads)
            if reason or _has_zeros(layer):
                not_compacted[layer.name] = (reason or "kernel zeros have no channel-group block structure") + (
                    _dense_cost(layer))
        return clone_layer(layer)

    clone = clone_model(model, rewrite)
    for original, new in paired_leaves(model, clone):
        if not isinstance(new, CompactKernel) and new.weights:
            new.set_weights(original.get_weights())
    return clone, compacted, not_compacted


def _dense_cost(layer):
    """What leaving a masked layer dense-shaped costs, for the report."""
    _, kernel_macs = layer_macs(layer, layer)
    zeros = 1 - float(kept_pairs(to_numpy(layer.kernel)).mean())
    if not kernel_macs or not zeros:
        return ""
    return f"; so its {kernel_macs:,} kernel MACs per sample all run, {100 * zeros:.0f}% of them on zero weights"


def _too_slow(layer, blocks, ratios, chosen, threads):
    """Why `compact_model` left a layer whose best layout is estimated too slow as it is."""
    one_thread = estimated_latency_ratios(layer, blocks)
    if threads > 1 and min(one_thread[name] for name in ratios) < _MAX_LATENCY_RATIO:
        why = f"faster with one thread, but its channel gathers run on one thread and dense GEMMs on {threads}"
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


class FoldedAway(keras.layers.Layer):
    """Where a BatchNormalization stood that `compact_model` folded into the kernel before it: passes inputs on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


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


def estimated_latency_ratios(layer, blocks, threads=1):
    """`{layout: estimated latency / dense latency}` of a masked layer's compact layouts.

    Per output position: GEMM MACs scaled by the share of XNNPACK's output
    tile and reduction depth they use, plus the floats each layout moves.
    The GEMMs share out over `threads` CPU threads, the moves do not (LiteRT
    runs GATHER outside XNNPACK, on one thread). "scatter" is present only
    where it applies (see `compact_model`).
    """
    *window, channels_in, channels_out = layer.kernel.shape
    taps, nodes = math.prod(window), len(blocks)
    fan_in, fan_out = int(blocks.sum(axis=0).max()), int(blocks.sum(axis=1).max())
    group_in, group_out = -(-channels_in // nodes), -(-channels_out // nodes)
    inputs_per_output = math.prod(getattr(layer, "strides", None) or (1,))

    def gemm(macs, width, depth):
        return macs / (min(1.0, width / _TILE_CHANNELS) * min(1.0, depth / _FULL_REDUCTION) ** 0.5)

    dense = gemm(taps * channels_in * channels_out, channels_out, taps * channels_in)
    gather = gemm(taps * nodes * fan_in * group_in * group_out, group_out, taps * fan_in * group_in)
    # channels to the front, k copies gathered, back: ~(2k + 1) floats per input channel
    moved = _MACS_PER_FLOAT_MOVED * threads
    ratios = {"gather": gather + moved * channels_in * (2 * fan_in + 1) * inputs_per_output}
    if _scatter_applies(channels_in, blocks):
        scatter = gemm(taps * nodes * fan_out * group_in * group_out, fan_out * group_out, taps * group_in)
        # k partial sums to the front, gathered, summed, back: ~(3k + 2) floats per output channel
        ratios["scatter"] = scatter + moved * channels_out * (3 * fan_in + 2)
    return {name: float(cost / dense) for name, cost in ratios.items()}


def _scatter_applies(channels_in, blocks):
    fan_in = blocks.sum(axis=0)
    return channels_in % len(blocks) == 0 and bool(np.all(fan_in == fan_in[0]))


class CompactKernel(keras.layers.Layer):
    """A masked Dense/ConvND computed over its kept channel blocks only.

    `layout="gather"`: one `take` gathers, for each of the n output groups,
    the input channels of the (at most) k input groups it reads; one
    convolution with `groups=n` then computes every output group from its
    own slice. Uneven channel groups are padded with zero weights (and the
    padded outputs dropped).

    `layout="scatter"`: one convolution with `groups=n` computes, from each
    input group alone, its contribution to each of the k output groups it
    feeds; one `take` lines these partial sums up by output group and a sum
    adds the k of each; bias and activation follow. Needs input channels
    divisible by n and every output group reading k groups.
    """

    def __init__(self, layer, blocks, layout="gather", **kwargs):
        super().__init__(name=layer.name, dtype=layer.dtype_policy, **kwargs)
        if layout not in LAYOUTS[1:]:
            raise InputValueError(f"`layout` must be one of {LAYOUTS[1:]}, got {layout!r}.")
        kernel = to_numpy(layer.kernel)
        nodes = blocks.shape[0]
        channels_in, channels_out = kernel.shape[-2:]
        if layout == "scatter" and not _scatter_applies(channels_in, blocks):
            raise InputValueError(
                f"The scatter layout needs input channels divisible by the {nodes} groups and every output group "
                f"reading equally many input groups; {layer.name!r} has {channels_in} input channels and reads "
                f"{sorted(set(blocks.sum(axis=0).tolist()))} groups per output group. Use layout='gather'."
            )
        out_members = _group_members(channels_out, nodes)
        self.layout, self.nodes, self.units = layout, nodes, channels_out
        self.is_dense = _class_name(layer) == "Dense"
        config = layer.get_config()
        bias = to_numpy(layer.bias) if layer.use_bias else None
        if layout == "gather":
            compact, bias = self._gather_weights(kernel, blocks, out_members, bias)
        else:
            compact = self._scatter_weights(kernel, blocks, out_members)
            self.activation = keras.activations.get(config["activation"])
            self._bias = bias
        self._compact_weights = [compact.reshape(1, 1, *compact.shape) if self.is_dense else compact]
        if layout == "gather" and bias is not None:
            self._compact_weights.append(bias)
        conv_args = dict(
            filters=compact.shape[-1],
            kernel_size=1 if self.is_dense else config["kernel_size"],
            groups=nodes,
            activation=config["activation"] if layout == "gather" else None,
            use_bias=layout == "gather" and config["use_bias"],
            dtype=layer.dtype_policy,
            name="grouped",
        )
        if not self.is_dense:
            conv_args.update(strides=config["strides"], padding=config["padding"], dilation_rate=config["dilation_rate"])
        self.conv = _CONV_CLASS[_class_name(layer)](**conv_args)
        self.conv_input_width = channels_in if layout == "scatter" else len(self.gather_index)

    def _gather_weights(self, kernel, blocks, out_members, bias):
        nodes = len(blocks)
        channels_in, channels_out = kernel.shape[-2:]
        in_members = _group_members(channels_in, nodes)
        degree = int(blocks.sum(axis=0).max())
        # neighbours[j]: the input groups output group j reads, padded with a
        # group of only -1 (a zero weight) up to `degree`.
        neighbours = np.full((nodes, degree), nodes)
        for j in range(nodes):
            reads = np.flatnonzero(blocks[:, j])
            neighbours[j, : len(reads)] = reads
        in_members = np.vstack([in_members, np.full(in_members.shape[1], -1)])
        gathered = in_members[neighbours].reshape(nodes, -1)  # (n, k * group_in)
        padded = np.zeros((*kernel.shape[:-2], channels_in + 1, channels_out + 1), kernel.dtype)
        padded[..., :-1, :-1] = kernel
        compact = padded[..., gathered[:, :, None], out_members[:, None, :]]  # (..., n, k*g_in, g_out)
        compact = np.moveaxis(compact, -3, -2).reshape(*kernel.shape[:-2], gathered.shape[1], -1)
        self.gather_index = np.where(gathered < 0, 0, gathered).reshape(-1).astype("int32")
        flat_out = out_members.reshape(-1)
        self.output_index = None if np.all(flat_out >= 0) else np.flatnonzero(flat_out >= 0).astype("int32")
        if bias is not None:
            bias = np.append(bias, 0)[flat_out]
        return compact, bias

    def _scatter_weights(self, kernel, blocks, out_members):
        nodes = len(blocks)
        group_in = kernel.shape[-2] // nodes
        group_out = out_members.shape[1]
        feeds = [np.flatnonzero(blocks[i]) for i in range(nodes)]  # output groups input group i feeds
        fan_out = max(len(f) for f in feeds)
        # Partial channel (i, s, c) holds input group i's share of output
        # channel out_members[feeds[i][s], c]; unused (i, s, c) keep zero weights.
        compact = np.zeros((*kernel.shape[:-2], group_in, nodes * fan_out * group_out), kernel.dtype)
        partial = {}
        for i, outputs in enumerate(feeds):
            rows = kernel[..., i * group_in : (i + 1) * group_in, :]
            for s, j in enumerate(outputs):
                members = out_members[j]
                first = (i * fan_out + s) * group_out
                real = np.flatnonzero(members >= 0)
                compact[..., first + real] = rows[..., members[real]]
                partial[i, j] = first
        # plane_index[t, ch]: the partial channel of output channel ch's t-th input group
        sources = [np.flatnonzero(blocks[:, j]) for j in range(nodes)]
        self.fan_in = len(sources[0])
        self.plane_index = np.empty((self.fan_in, kernel.shape[-1]), "int32")
        for j, members in enumerate(out_members):
            for c, channel in enumerate(members[members >= 0]):
                self.plane_index[:, channel] = [partial[i, j] + c for i in sources[j]]
        self.plane_index = self.plane_index.reshape(-1)
        return compact

    def build(self, input_shape):
        shape = (None, 1, 1, self.conv_input_width) if self.is_dense else (*input_shape[:-1], self.conv_input_width)
        self.conv.build(shape)
        self.conv.set_weights(self._compact_weights)
        if self.layout == "scatter" and self._bias is not None:
            self.bias = self.add_weight(shape=self._bias.shape, initializer="zeros", name="bias")
            self.bias.assign(self._bias)
        self._inner_shape = tuple(input_shape[1:-1])

    def call(self, inputs):
        x = inputs
        if self.layout == "gather":
            x = _take_channels(x, self.gather_index)
        if self.is_dense:
            x = keras.ops.reshape(x, (-1, 1, 1, x.shape[-1]))
        y = self.conv(x)
        if self.layout == "scatter":
            y = self._add_partial_sums(y)
        elif self.output_index is not None:
            y = keras.ops.take(y, self.output_index, axis=-1)
        if self.is_dense:
            inner = self._inner_shape
            if None in inner:  # variable length (e.g. a sequence): read it at run time
                inner = tuple(keras.ops.shape(inputs)[1:-1])
            y = keras.ops.reshape(y, (-1, *inner, self.units))
        return y

    def _add_partial_sums(self, partials):
        leading = tuple(partials.shape)[:-1]
        if leading.count(None) > 1:
            leading = keras.ops.shape(partials)[:-1]
        else:  # static where possible: shape ops would split LiteRT's XNNPACK partition
            leading = tuple(-1 if size is None else size for size in leading)
        planes = keras.ops.take(_channels_first(partials), self.plane_index, axis=0)
        summed = keras.ops.sum(keras.ops.reshape(planes, (self.fan_in, self.units, -1)), axis=0)
        y = _channels_last(keras.ops.reshape(summed, (self.units, *leading)))
        if self._bias is not None:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        if self.is_dense:
            return (*input_shape[:-1], self.units)
        return (*self.conv.compute_output_shape((*input_shape[:-1], self.conv_input_width))[:-1], self.units)


def _take_channels(x, index):
    """`x[..., index]`. LiteRT's GATHER on the channel axis copies element by
    element; moving channels to the front makes it copy whole planes
    (TRANSPOSE runs in XNNPACK), 3-10x faster in benchmarks/export_bench.py's
    layers."""
    return _channels_last(keras.ops.take(_channels_first(x), index, axis=0))


def _channels_first(x):
    rank = len(x.shape)
    return keras.ops.transpose(x, (rank - 1, *range(rank - 1)))


def _channels_last(x):
    rank = len(x.shape)
    return keras.ops.transpose(x, (*range(1, rank), 0))


def _group_members(channels, nodes):
    """`(nodes, max group size)` channel indices per group, -1 where a smaller group is padded."""
    groups = channel_groups(channels, nodes)
    size = np.bincount(groups).max()
    members = np.full((nodes, size), -1)
    for g in range(nodes):
        chosen = np.flatnonzero(groups == g)
        members[g, : len(chosen)] = chosen
    return members


def _class_name(layer):
    """The prunable Keras class `layer` is or subclasses (e.g. "Conv2D"), else None."""
    return next((cls.__name__ for cls in type(layer).__mro__ if cls.__name__ in PRUNABLE), None)


def _why_not_compact(layer):
    if _class_name(layer) not in _CONV_CLASS:
        return f"{type(layer).__name__}: compact rewrite covers Dense and Conv1D/2D/3D only"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first layout: compact rewrite needs channels_last"
    return None


def _has_zeros(layer):
    return bool(np.any(to_numpy(layer.kernel) == 0))


def _calibration_samples(model, quantize, representative_data):
    if quantize != "int8":
        if representative_data is not None:
            raise InputValueError(f"`representative_data` is only used with quantize='int8', got quantize={quantize!r}.")
        return None
    if representative_data is None:
        raise InputValueError(
            "quantize='int8' needs `representative_data`: an array of real input samples shaped "
            f"(N, {', '.join(str(d) for d in model.inputs[0].shape[1:])}) to calibrate activation ranges."
        )
    if len(model.inputs) != 1:
        raise InputValueError(f"int8 calibration supports single-input models, this one has {len(model.inputs)} inputs.")
    samples = np.asarray(representative_data, dtype="float32")
    expected = tuple(model.inputs[0].shape[1:])
    if samples.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, samples.shape[1:])):
        raise InputValueError(
            f"`representative_data` must be shaped (N, {', '.join(map(str, expected))}) like the model input, "
            f"got {samples.shape}."
        )
    if len(samples) == 0:
        raise InputValueError("`representative_data` is empty: give at least one input sample (a few hundred is typical).")
    return samples[:_CALIBRATION_SAMPLES]


def _writable_path(path):
    path = Path(path)
    if path.suffix != ".tflite":
        raise InputValueError(f"The export path must end with .tflite, got {str(path)!r}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {path}: folder {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"Cannot write {path}: no write permission.")
    return path


def _converter_options(model, quantize, samples):
    import tensorflow as tf

    # The converter's sparse encoding shrinks the layers left sparse (it is
    # densified at load time, so speed is unchanged). Combined with any
    # quantization, LiteRT 2.3 cannot run the result (XNNPACK refuses the
    # nodes, float16 gives NaN), so quantized files are stored dense.
    optimizations, notes, options = [], [], {}
    if not quantize:
        unsafe = _unsafe_sparse_dense_layers(model)
        if unsafe:
            notes.append(
                "converter sparsity encoding not used: LiteRT's sparse FULLY_CONNECTED gives wrong outputs "
                f"when input features are not a multiple of 4 ({', '.join(unsafe)})"
            )
        else:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if quantize:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if quantize == "int8":
        options["representative_dataset"] = lambda: ([sample[None]] for sample in samples)
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
    options["optimizations"] = optimizations
    return options, notes


def _unsafe_sparse_dense_layers(model):
    return [
        layer.name
        for layer in leaves(model)
        if _class_name(layer) == "Dense" and layer.kernel.shape[0] % 4 and _has_zeros(layer)
    ]


def _write_atomically(model, path, options):
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tflite")
    os.close(handle)
    try:
        model.export(partial, format="litert", verbose=False, **options)
        os.chmod(partial, normal_file_mode())
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


__all__ = [
    "ExportReport", "export_tflite", "compact_model", "channel_blocks", "estimated_latency_ratios", "CompactKernel",
    "FoldedAway",
]
