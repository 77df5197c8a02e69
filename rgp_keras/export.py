"""LiteRT (.tflite) export of RGP models: compact kernels that hold and compute only the kept weights.

A masked layer's kernel is zero outside the (input group, output group) blocks
of its graph, and every output group reads the same number k of input groups.
The compact rewrite gathers, for each output group, the input channels of its
k neighbour groups (one GATHER) and runs one grouped convolution with
`groups = n` over them: weights and MACs are k/n of the dense layer's, and
the result is exactly the masked layer's. The block structure is read from
the kernel's zeros, so pruned and stripped models export alike.
"""

import gzip
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from rgp_keras.masks import PRUNABLE, channel_groups, prunable_kernel
from rgp_keras.prune import _clone_layer, _clone_model, _leaves, _paired_leaves, _reject_other_keras, strip_pruning
from rgp_keras.summary import pruning_summary
from rgp_keras.wrapper import RegularGraphPruning

QUANTIZE = (None, "dynamic", "float16", "int8")
_CONV_CLASS = {"Dense": keras.layers.Conv2D, "Conv1D": keras.layers.Conv1D, "Conv2D": keras.layers.Conv2D,
               "Conv3D": keras.layers.Conv3D}
_CALIBRATION_SAMPLES = 200
# XNNPACK's grouped conv reaches the ideal k/n of dense latency only for groups
# of >= 16 channels and is about 16/g times slower for groups of g channels
# (benchmarks/export_bench.py, 3x3 and 1x1 convs, one thread); layers whose
# estimate is not clearly faster than dense stay sparse.
_FULL_SPEED_GROUP = 16
_MAX_LATENCY_RATIO = 0.9


@dataclass(frozen=True)
class ExportReport:
    """What `export_tflite` wrote and what it gained.

    `params`/`macs` are those of the exported computation (per sample), beside
    the dense model's; `nonzero_params` counts the non-zero weights among
    `params`. `compacted` names the layers rewritten to compact kernels;
    `not_compacted` maps the other masked-looking layers to the reason.
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
    compacted: tuple = ()
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
            ("compacted", f"{len(self.compacted)} layers"),
        ]
        rows += [(f"  kept as is: {name}", reason) for name, reason in self.not_compacted.items()]
        rows += [("note", note) for note in self.notes]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def export_tflite(model, path, *, compact=True, quantize=None, representative_data=None):
    """Write a pruned (or stripped) Keras 3 model as a .tflite file for LiteRT.

    Args:
        model: a model from `prune_regular_graph`, or its `strip_pruning` result.
        path: the .tflite file to write (written atomically: on error nothing
            is left behind and an existing file is untouched).
        compact: rewrite each masked Dense/Conv1D/Conv2D/Conv3D into a gather +
            grouped convolution holding only the kept weights (fewer bytes and
            MACs). With `compact=False` the stripped model is converted with the
            converter's sparsity optimisation (zeros still computed).
        quantize: None (float32), "dynamic" (int8 weights), "float16", or
            "int8" (full integer; needs `representative_data`).
        representative_data: calibration inputs for "int8": an array of input
            samples `(N, *input_shape)` (a few hundred real samples suffice).

    Returns:
        An `ExportReport` (sizes, params and MACs before/after, which layers
        were compacted).

    Example:
    >>> report = export_tflite(pruned_model, "model.tflite")  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    _reject_other_keras(model, "export_tflite")
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras 3 model, got {type(model).__name__}.")
    if quantize not in QUANTIZE:
        raise ValueError(f"`quantize` must be one of {QUANTIZE}, got {quantize!r}.")
    samples = _calibration_samples(model, quantize, representative_data)
    path = _writable_path(path)

    stripped = strip_pruning(model) if any(isinstance(layer, RegularGraphPruning) for layer in _leaves(model)) else model
    exported, compacted, not_compacted = compact_model(stripped) if compact else (stripped, (), {})
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
        params=exported.count_params(),
        nonzero_params=sum(int(np.count_nonzero(keras.ops.convert_to_numpy(w))) for w in exported.weights),
        dense_macs=dense["macs"],
        macs=after["macs"],
        compacted=tuple(compacted),
        not_compacted=dict(not_compacted),
        notes=tuple(notes),
    )


def compact_model(model):
    """`(compact model, names compacted, {name: why not})` for a stripped Keras 3 model.

    Layers whose kernel has a channel-group block structure with density < 1
    become `CompactKernel` layers computing the same outputs; the rest are
    copied unchanged.
    """
    compacted, not_compacted = [], {}

    def rewrite(layer):
        if layer.count_params() and prunable_kernel(layer)[0]:
            reason = _why_not_compact(layer)
            blocks = None if reason else channel_blocks(keras.ops.convert_to_numpy(layer.kernel))
            if blocks is not None:
                slowdown = _estimated_latency_ratio(layer.kernel.shape, blocks)
                if slowdown < _MAX_LATENCY_RATIO:
                    compacted.append(layer.name)
                    return CompactKernel(layer, blocks)
                reason = (
                    f"compact kernel estimated {slowdown:.2f}x the dense latency (groups of "
                    f"{min(layer.kernel.shape[-2:]) // len(blocks)} channels are too small for XNNPACK's grouped conv)"
                )
            if reason or _has_zeros(layer):
                not_compacted[layer.name] = reason or "kernel zeros have no channel-group block structure"
        return _clone_layer(layer)

    clone = _clone_model(model, rewrite)
    for original, new in _paired_leaves(model, clone):
        if not isinstance(new, CompactKernel):
            new.set_weights(original.get_weights())
    return clone, compacted, not_compacted


def channel_blocks(kernel):
    """The coarsest channel-group blocks explaining a kernel's zeros, or None.

    For a kernel `(..., in, out)` returns a boolean `(n, n)` array `blocks`
    (input group, output group) with contiguous groups as in
    `channel_groups`, for the node count n giving the lowest block density
    (max kept blocks per output group / n); None when no n gives density < 1.
    """
    pairs = np.any(kernel.reshape(-1, *kernel.shape[-2:]) != 0, axis=0)
    channels_in, channels_out = pairs.shape
    row_changes = np.flatnonzero(np.any(pairs[1:] != pairs[:-1], axis=1)) + 1
    col_changes = np.flatnonzero(np.any(pairs[:, 1:] != pairs[:, :-1], axis=0)) + 1
    best, best_density = None, 1.0
    for nodes in range(2, min(channels_in, channels_out) + 1):
        if not (_are_group_starts(row_changes, channels_in, nodes) and _are_group_starts(col_changes, channels_out, nodes)):
            continue
        starts_in = np.unique(channel_groups(channels_in, nodes), return_index=True)[1]
        starts_out = np.unique(channel_groups(channels_out, nodes), return_index=True)[1]
        blocks = pairs[starts_in][:, starts_out]
        density = blocks.sum(axis=0).max() / nodes
        if 0 < density < best_density:
            best, best_density = blocks, density
    return best


def _estimated_latency_ratio(kernel_shape, blocks):
    nodes = len(blocks)
    group = min(kernel_shape[-2:]) // nodes
    density = blocks.sum(axis=0).max() / nodes
    return float(density * max(1.0, _FULL_SPEED_GROUP / group))


def _are_group_starts(positions, channels, nodes):
    return bool(np.all(positions * nodes // channels != (positions - 1) * nodes // channels))


class CompactKernel(keras.layers.Layer):
    """A masked Dense/ConvND computed over its kept channel blocks only.

    One `take` gathers, for each of the n output groups, the input channels of
    the (at most) k input groups it reads; one convolution with `groups=n`
    then computes every output group from its own slice. Uneven channel
    groups are padded with zero weights (and the padded outputs dropped).
    """

    def __init__(self, layer, blocks, **kwargs):
        super().__init__(name=layer.name, dtype=layer.dtype_policy, **kwargs)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        nodes = blocks.shape[0]
        channels_in, channels_out = kernel.shape[-2:]
        in_members = _group_members(channels_in, nodes)
        out_members = _group_members(channels_out, nodes)
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
        self.is_dense = _class_name(layer) == "Dense"
        self.units = channels_out
        weights = [compact.reshape(1, 1, *compact.shape) if self.is_dense else compact]
        if layer.use_bias:
            bias = np.append(keras.ops.convert_to_numpy(layer.bias), 0)
            weights.append(bias[out_members.reshape(-1)])
        self._compact_weights = weights
        config = layer.get_config()
        conv_args = dict(
            filters=out_members.size,
            kernel_size=1 if self.is_dense else config["kernel_size"],
            groups=nodes,
            activation=config["activation"],
            use_bias=config["use_bias"],
            dtype=layer.dtype_policy,
            name="grouped",
        )
        if not self.is_dense:
            conv_args.update(strides=config["strides"], padding=config["padding"], dilation_rate=config["dilation_rate"])
        self.conv = _CONV_CLASS[_class_name(layer)](**conv_args)
        self.nodes = nodes

    def build(self, input_shape):
        width = len(self.gather_index)
        shape = (None, 1, 1, width) if self.is_dense else (*input_shape[:-1], width)
        self.conv.build(shape)
        self.conv.set_weights(self._compact_weights)
        self._inner_shape = tuple(input_shape[1:-1])

    def call(self, inputs):
        # LiteRT's GATHER on the channel axis copies element by element; moving
        # channels to the front makes it copy whole planes (TRANSPOSE runs in
        # XNNPACK), 3-10x faster in benchmarks/export_bench.py's layers.
        rank = len(inputs.shape)
        x = keras.ops.transpose(inputs, (rank - 1, *range(rank - 1)))
        x = keras.ops.take(x, self.gather_index, axis=0)
        x = keras.ops.transpose(x, (*range(1, rank), 0))
        if self.is_dense:
            x = keras.ops.reshape(x, (-1, 1, 1, x.shape[-1]))
        y = self.conv(x)
        if self.output_index is not None:
            y = keras.ops.take(y, self.output_index, axis=-1)
        if self.is_dense:
            y = keras.ops.reshape(y, (-1, *self._inner_shape, self.units))
        return y

    def compute_output_shape(self, input_shape):
        if self.is_dense:
            return (*input_shape[:-1], self.units)
        return (*self.conv.compute_output_shape((*input_shape[:-1], len(self.gather_index)))[:-1], self.units)


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
    return bool(np.any(keras.ops.convert_to_numpy(layer.kernel) == 0))


def _calibration_samples(model, quantize, representative_data):
    if quantize != "int8":
        if representative_data is not None:
            raise ValueError(f"`representative_data` is only used with quantize='int8', got quantize={quantize!r}.")
        return None
    if representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data`: an array of real input samples shaped "
            f"(N, {', '.join(str(d) for d in model.inputs[0].shape[1:])}) to calibrate activation ranges."
        )
    if len(model.inputs) != 1:
        raise ValueError(f"int8 calibration supports single-input models, this one has {len(model.inputs)} inputs.")
    samples = np.asarray(representative_data, dtype="float32")
    expected = tuple(model.inputs[0].shape[1:])
    if samples.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, samples.shape[1:])):
        raise ValueError(
            f"`representative_data` must be shaped (N, {', '.join(map(str, expected))}) like the model input, "
            f"got {samples.shape}."
        )
    if len(samples) == 0:
        raise ValueError("`representative_data` is empty: give at least one input sample (a few hundred is typical).")
    return samples[:_CALIBRATION_SAMPLES]


def _writable_path(path):
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"The export path must end with .tflite, got {str(path)!r}.")
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
        for layer in _leaves(model)
        if _class_name(layer) == "Dense" and layer.kernel.shape[0] % 4 and _has_zeros(layer)
    ]


def _write_atomically(model, path, options):
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tflite")
    os.close(handle)
    try:
        model.export(partial, format="litert", verbose=False, **options)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


__all__ = ["ExportReport", "export_tflite", "compact_model", "channel_blocks", "CompactKernel"]
