"""The compact layers `export_tflite` writes: a masked Dense/ConvND computed over its kept channel blocks only."""

import base64

import keras
import numpy as np

from rgp_keras.errors import InputValueError
from rgp_keras.export._groups import channel_runs, gathered_channels, group_members
from rgp_keras.export._latency import scatter_applies
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.model_walk import to_numpy


class CompactKernel(keras.layers.Layer):
    """A masked Dense/ConvND computed over its kept channel blocks only (base of the two layouts).

    Built from the masked `layer` and its `(n, n)` block mask; `layer` may be
    an unbuilt layer (or its serialised config) with `channels_in` given: then
    the weights are zeros of the right shape, to be loaded from a file.
    `get_config` holds the source layer's config, the packed blocks and the
    input width, so a compact model saves and reloads as .keras.
    """

    layout = None

    def __init__(self, layer, blocks, channels_in=None, **kwargs):
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        if isinstance(blocks, dict):
            nodes = blocks["nodes"]
            packed = np.frombuffer(base64.b64decode(blocks["bits"]), dtype=np.uint8)
            blocks = np.unpackbits(packed, count=nodes * nodes).reshape(nodes, nodes).astype(bool)
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self._source, self._blocks = keras.layers.serialize(layer), blocks
        kernel = to_numpy(layer.kernel) if layer.built else _zero_kernel(layer, channels_in)
        self.channels_in, self.units = (int(size) for size in kernel.shape[-2:])
        self.nodes = blocks.shape[0]
        self.is_dense = layer_type(layer)[1].layout == "dense"
        config = layer.get_config()
        bias = None
        if config["use_bias"]:
            bias = to_numpy(layer.bias) if layer.built else np.zeros(self.units, kernel.dtype)
        compact, conv_bias = self._compact(kernel, blocks, group_members(self.units, self.nodes), bias, layer.name)
        self._compact_weights = [compact.reshape(1, 1, *compact.shape) if self.is_dense else compact]
        if conv_bias is not None:
            self._compact_weights.append(conv_bias)
        conv_args = dict(
            filters=compact.shape[-1],
            kernel_size=1 if self.is_dense else config["kernel_size"],
            groups=self.nodes,
            activation=self._conv_activation(config),
            use_bias=conv_bias is not None,
            dtype=layer.dtype_policy,
            name="grouped",
        )
        if not self.is_dense:
            conv_args.update(
                strides=config["strides"], padding=config["padding"], dilation_rate=config["dilation_rate"]
            )
        self.conv = getattr(keras.layers, layer_type(layer)[1].compact_as)(**conv_args)
        self.conv_input_width = compact.shape[-2] * self.nodes  # the grouped conv's kernel holds one group's

    def build(self, input_shape):
        shape = (None, 1, 1, self.conv_input_width) if self.is_dense else (*input_shape[:-1], self.conv_input_width)
        self.conv.build(shape)
        self.conv.set_weights(self._compact_weights)
        self._inner_shape = tuple(input_shape[1:-1])

    def call(self, inputs):
        x = self._before(inputs)
        if self.is_dense:
            x = keras.ops.reshape(x, (-1, 1, 1, x.shape[-1]))
        y = self._after(self.conv(x))
        if self.is_dense:
            inner = self._inner_shape
            if None in inner:  # variable length (e.g. a sequence): read it at run time
                inner = tuple(keras.ops.shape(inputs)[1:-1])
            y = keras.ops.reshape(y, (-1, *inner, self.units))
        return y

    def get_config(self):
        packed = np.packbits(self._blocks).tobytes()
        return {
            **super().get_config(),
            "layer": self._source,
            "channels_in": self.channels_in,
            "blocks": {"nodes": int(self.nodes), "bits": base64.b64encode(packed).decode("ascii")},
        }

    def compute_output_shape(self, input_shape):
        if self.is_dense:
            return (*input_shape[:-1], self.units)
        return (*self.conv.compute_output_shape((*input_shape[:-1], self.conv_input_width))[:-1], self.units)


@keras.saving.register_keras_serializable(package="rgp_keras")
class GatherKernel(CompactKernel):
    """Compact layout "gather": one `take` gathers, for each of the n output
    groups, the input channels of the (at most) k input groups it reads; one
    convolution with `groups=n` (bias and activation included) then computes
    every output group from its own slice. Uneven channel groups are padded
    with zero weights (and the padded outputs dropped)."""

    layout = "gather"

    def _compact(self, kernel, blocks, out_members, bias, name):
        channels_in, channels_out = kernel.shape[-2:]
        gathered = gathered_channels(blocks, channels_in)  # (n, k*g_in)
        padded = np.zeros((*kernel.shape[:-2], channels_in + 1, channels_out + 1), kernel.dtype)
        padded[..., :-1, :-1] = kernel
        compact = padded[..., gathered[:, :, None], out_members[:, None, :]]  # (..., n, k*g_in, g_out)
        compact = np.moveaxis(compact, -3, -2).reshape(*kernel.shape[:-2], gathered.shape[1], -1)
        # a padded channel reads channel 0 (its weights are zero)
        self.gather_index = np.where(gathered < 0, 0, gathered).reshape(-1).astype("int32")
        flat_out = out_members.reshape(-1)
        self.output_index = None if np.all(flat_out >= 0) else np.flatnonzero(flat_out >= 0).astype("int32")
        if bias is not None:
            bias = np.append(bias, 0)[flat_out]
        return compact, bias

    def _conv_activation(self, config):
        return config["activation"]

    def _before(self, inputs):
        return take_channels(inputs, self.gather_index)

    def _after(self, y):
        return y if self.output_index is None else keras.ops.take(y, self.output_index, axis=-1)


@keras.saving.register_keras_serializable(package="rgp_keras")
class SliceKernel(GatherKernel):
    """Compact layout "slices": the "gather" layout with its input channels picked by slices of consecutive
    channels and one concatenation (LiteRT's STRIDED_SLICE and CONCATENATION, which XNNPACK runs, where
    GATHER runs outside it between two transposes): the faster of the two where groups are wide."""

    layout = "slices"

    def _compact(self, kernel, blocks, out_members, bias, name):
        compact, bias = super()._compact(kernel, blocks, out_members, bias, name)
        self.runs = channel_runs(self.gather_index)
        return compact, bias

    def _before(self, inputs):
        parts = [inputs[..., start:stop] for start, stop in self.runs]
        return parts[0] if len(parts) == 1 else keras.ops.concatenate(parts, axis=-1)


@keras.saving.register_keras_serializable(package="rgp_keras")
class ScatterKernel(CompactKernel):
    """Compact layout "scatter": one convolution with `groups=n` computes, from
    each input group alone, its contribution to each of the k output groups it
    feeds; one `take` lines these partial sums up by output group and a sum
    adds the k of each; bias and activation follow. Needs input channels
    divisible by n and every output group reading k groups."""

    layout = "scatter"

    def _compact(self, kernel, blocks, out_members, bias, name):
        nodes = len(blocks)
        if not scatter_applies(kernel.shape[-2], blocks):
            raise InputValueError(
                f"The scatter layout needs input channels divisible by the {nodes} groups and every output group "
                f"reading equally many input groups; {name!r} has {kernel.shape[-2]} input channels and reads "
                f"{sorted(set(blocks.sum(axis=0).tolist()))} groups per output group. Use layout='gather'."
            )
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
        self._bias = bias
        return compact, None

    def _conv_activation(self, config):
        self.activation = keras.activations.get(config["activation"])
        return None

    def build(self, input_shape):
        super().build(input_shape)
        if self._bias is not None:
            self.bias = self.add_weight(shape=self._bias.shape, initializer="zeros", name="bias")
            self.bias.assign(self._bias)

    def _before(self, inputs):
        return inputs

    def _after(self, partials):
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


KERNELS = {"gather": GatherKernel, "slices": SliceKernel, "scatter": ScatterKernel}
# export_tflite / compact_model `layout`: estimated fastest per layer, measured fastest, or one forced
LAYOUTS = ("auto", "measured", *KERNELS)


@keras.saving.register_keras_serializable(package="rgp_keras")
class FoldedAway(keras.layers.Layer):
    """Where a BatchNormalization stood that `compact_model` folded into the kernel before it: passes inputs on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _zero_kernel(layer, channels_in):
    """Zeros shaped like the kernel of the unbuilt Dense/ConvND `layer` reading `channels_in` channels."""
    config = layer.get_config()
    window = () if layer_type(layer)[1].layout == "dense" else tuple(config["kernel_size"])
    return np.zeros((*window, channels_in, config.get("units") or config["filters"]), "float32")


def take_channels(x, index):
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
