"""The layer registry: everything rgp_keras knows about a Keras layer type, in one table.

Masks, channel assignment (and the width axis's channel spaces), reconstruction
and the compact export each read their facts here; adding a layer type is one
entry. A layer is looked up by the names of its class and its bases that come
from a Keras `layers` module, so Keras 3, tf_keras and user subclasses resolve
alike, and a backend operation of the same name (`keras.ops.add` is an `Add`)
does not.
"""

from dataclasses import dataclass

# Kernel layouts: "dense" `(in, out)`; "conv" `(..., in, out)` (Conv1D/2D/3D and
# the pointwise kernel of separable convolutions); "conv_transpose" `(..., out, in)`.
KERNEL_LAYOUTS = ("dense", "conv", "conv_transpose")


@dataclass(frozen=True)
class LayerType:
    """What rgp_keras does with one layer class.

    Attributes:
        kernel: attribute of the (in, out) channel-pair kernel RGP masks, or None.
        layout: that kernel's layout, one of `KERNEL_LAYOUTS`.
        initializer: the layer's attribute holding that kernel's initializer.
        not_prunable: why a layer of this type carries no mask (None: it can, or it has no weights to).
        channels: its role in a channel space: "kernel" (its kernel ends one space and starts another),
            "channelwise" (acts on each channel on its own), "merge" (element-wise over equal-width inputs),
            "concat" (joins its inputs' channels), "flatten" (positions x channels into one axis) or
            "reshape" (moves positions around, channels kept when the last axis keeps its size).
        per_channel: for a "channelwise" type, `per_channel(layer, rank)` says whether this layer's settings
            keep it per channel (normalising over the last axis only, a depth multiplier of 1, ...); None: always.
        channel_axis: the axis of its multi-dimensional weights that holds its channels (a depthwise kernel's
            is -2); vectors hold them on their only axis.
        refit: reconstruction refits its kept weights by least squares.
        compact_as: the Keras convolution class the compact export computes it with (Dense as a 1x1 Conv2D).
        width: the config key of a "kernel" layer's output channel count ("units", "filters").
        reads: a "kernel" layer's weights whose axis -2 holds its input channels (its `kernel` and, for a
            separable convolution, the depthwise kernel before it); its `kernel`'s last axis and its bias hold
            its output channels.
    """

    kernel: str | None = None
    layout: str | None = None
    initializer: str | None = None
    not_prunable: str | None = None
    channels: str | None = None
    per_channel: object = None
    channel_axis: int = -1
    refit: bool = False
    compact_as: str | None = None
    width: str | None = None
    reads: tuple = ()


def _normalises_the_last_axis(layer, rank):
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return len(axis) == 1 and axis[0] in (-1, rank - 1)


def _one_output_per_channel(layer, rank):
    return layer.depth_multiplier == 1


def _slopes_per_channel(layer, rank):
    return not any(axis % rank == rank - 1 for axis in (layer.shared_axes or ()))


def _concatenates_channels(layer, rank):
    return layer.axis in (-1, rank - 1)


_DEPTHWISE = LayerType(not_prunable="depthwise convolution: no (in, out) channel pairs to prune",
                       channels="channelwise", per_channel=_one_output_per_channel, channel_axis=-2)
_CHANNELWISE = LayerType(channels="channelwise")
_NORMALISATION = LayerType(channels="channelwise", per_channel=_normalises_the_last_axis)

REGISTRY = {
    "Dense": LayerType("kernel", "dense", "kernel_initializer", channels="kernel", refit=True, compact_as="Conv2D",
                       width="units", reads=("kernel",)),
    "Conv1D": LayerType("kernel", "conv", "kernel_initializer", channels="kernel", refit=True, compact_as="Conv1D",
                        width="filters", reads=("kernel",)),
    "Conv2D": LayerType("kernel", "conv", "kernel_initializer", channels="kernel", refit=True, compact_as="Conv2D",
                        width="filters", reads=("kernel",)),
    # LiteRT's CONV_3D has no groups: a grouped Conv3D converts but cannot run, so it is not compacted.
    "Conv3D": LayerType("kernel", "conv", "kernel_initializer", channels="kernel", width="filters",
                        reads=("kernel",)),
    "Conv1DTranspose": LayerType("kernel", "conv_transpose", "kernel_initializer"),
    "Conv2DTranspose": LayerType("kernel", "conv_transpose", "kernel_initializer"),
    "Conv3DTranspose": LayerType("kernel", "conv_transpose", "kernel_initializer"),
    **{name: LayerType("pointwise_kernel", "conv", "pointwise_initializer", channels="kernel",
                       per_channel=_one_output_per_channel, width="filters",
                       reads=("depthwise_kernel", "pointwise_kernel"))
       for name in ("SeparableConv1D", "SeparableConv2D")},
    "DepthwiseConv1D": _DEPTHWISE,
    "DepthwiseConv2D": _DEPTHWISE,
    "BatchNormalization": _NORMALISATION,
    "LayerNormalization": _NORMALISATION,
    "Softmax": _NORMALISATION,
    "PReLU": LayerType(channels="channelwise", per_channel=_slopes_per_channel),
    **{name: _CHANNELWISE for name in (
        "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D",
        "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "Identity", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "ZeroPadding1D",
        "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
        "UpSampling3D",
    )},
    **{name: LayerType(channels="merge") for name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average")},
    "Concatenate": LayerType(channels="concat", per_channel=_concatenates_channels),
    "Flatten": LayerType(channels="flatten"),
    "Reshape": LayerType(channels="reshape"),
}

# keras.ops operations that act element by element (`x + 3.0`, `ops.relu(x)` in a functional model): channels
# pass through them as through a merge of equal-width inputs, when their other arguments are plain numbers.
ELEMENTWISE_OPS = frozenset((
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power", "Negative", "Abs",
    "Absolute", "Square", "Sqrt", "Exp", "Log", "Tanh", "Clip", "Relu", "Relu6", "Sigmoid", "HardSigmoid",
    "HardSilu", "Silu", "Gelu", "Elu", "Selu", "Softplus", "Softsign", "LeakyRelu", "LogSigmoid",
))
_ELEMENTWISE = LayerType(channels="merge")


def layer_type(layer):
    """`(class name, LayerType)` of the first class along `layer`'s MRO in `REGISTRY`, or `(None, None)`.

    Example:
    >>> import keras
    >>> name, kind = layer_type(keras.layers.SeparableConv2D(8, 3))
    >>> name, kind.kernel, kind.layout
    ('SeparableConv2D', 'pointwise_kernel', 'conv')
    """
    for cls in type(layer).__mro__:
        if cls.__name__ in REGISTRY and "layers" in cls.__module__.split("."):
            return cls.__name__, REGISTRY[cls.__name__]
    cls = type(layer)
    if cls.__name__ in ELEMENTWISE_OPS and "ops" in cls.__module__.split("."):
        return cls.__name__, _ELEMENTWISE
    return None, None
