"""`RegularGraphPruning`: the Keras 3 wrapper that applies a fixed RGP mask to a layer's kernel."""

import keras
import numpy as np
from keras import ops

from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.graph import RegularGraph
from rgp_keras.masks import kernel_mask, prunable_kernel

# Name of the initializer attribute that belongs to each maskable kernel attribute.
INITIALIZER_OF = {"kernel": "kernel_initializer", "pointwise_kernel": "pointwise_initializer"}


@keras.saving.register_keras_serializable(package="rgp_keras")
class RegularGraphPruning(keras.layers.Wrapper):
    """Wraps a Dense/Conv layer and multiplies a fixed regular-graph mask into its kernel.

    The mask (input channel group i -> output channel group j kept iff (i, j)
    is an edge of `graph`) is a non-trainable weight set once at build time
    and never recomputed. Every forward pass uses `kernel * mask`, so masked
    weights contribute exactly zero and receive zero gradient.

    Args:
        layer: a Keras 3 `Dense`, `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose` or
            `SeparableConv1D/2D` layer (its pointwise kernel is masked).
        graph: the `RegularGraph` that decides the mask.
        self_loops: also keep group i -> group i (density (k + 1) / n).
        **kwargs: base layer arguments (`name` defaults to `"rgp_" + layer.name`).

    Example:
    >>> import keras
    >>> from rgp_keras.graph import RegularGraph
    >>> dense = RegularGraphPruning(keras.layers.Dense(64), RegularGraph.random(16, 4, seed=0))
    >>> outputs = dense(keras.ops.ones((2, 32)))
    >>> float(dense.density)
    0.25
    """

    def __init__(self, layer, graph, self_loops=False, **kwargs):
        attribute, layout = prunable_kernel(layer)
        if attribute is None:
            raise InputValueError(f"Layer {layer.name!r} cannot be pruned by RGP: {layout}.")
        if isinstance(graph, dict):
            graph = RegularGraph.from_config(graph)
        if not isinstance(graph, RegularGraph):
            raise InputTypeError(f"`graph` must be a RegularGraph, got {type(graph).__name__}.")
        kwargs.setdefault("name", f"rgp_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        if self.dtype_policy.name != layer.dtype_policy.name:
            # The wrapped layer computes: it must follow the wrapper's policy (e.g. "mixed_float16").
            if layer.built and layer.variable_dtype != self.dtype_policy.variable_dtype:
                raise InputValueError(
                    f"The dtype policy {self.dtype_policy.name!r} stores variables as "
                    f"{self.dtype_policy.variable_dtype!r}, but layer {layer.name!r} is built with "
                    f"{layer.variable_dtype!r} variables; give the wrapper a policy with "
                    f"{layer.variable_dtype!r} variables (float32 or mixed_float16 for float32), or wrap an "
                    "unbuilt layer."
                )
            layer.dtype_policy = self.dtype_policy
        self.graph = graph
        self.self_loops = bool(self_loops)
        self.kernel_attribute = attribute
        self.layout = layout

    def build(self, input_shape=None):
        if not self.layer.built:
            # Draw the kernel with its masked weights already zero: inside a symbolic build (a subclassed
            # model's first call) the `assign` below is only recorded, never applied.
            name = INITIALIZER_OF[self.kernel_attribute]
            initializer = getattr(self.layer, name)
            setattr(self.layer, name, _MaskedInitializer(initializer, self))
            try:
                super().build(input_shape)
            finally:
                setattr(self.layer, name, initializer)
        else:
            super().build(input_shape)
        kernel = self.kernel
        mask = kernel_mask(self.graph, kernel.shape, self.layout, self.self_loops)
        self.mask = self.add_weight(
            name="mask",
            shape=kernel.shape,
            initializer=keras.initializers.Constant(mask.astype("float32")),
            dtype=kernel.dtype,
            trainable=False,
        )
        # Zero the masked weights of the variable itself, so that what is saved,
        # stripped or decayed by an optimizer is exactly what is computed with.
        kernel.assign(self.masked_kernel())
        self.built = True

    @property
    def kernel(self):
        """The wrapped layer's (unmasked) kernel variable."""
        return getattr(self.layer, self.kernel_attribute)

    @property
    def density(self):
        """Fraction of kernel weights kept."""
        return ops.mean(self.mask)

    def masked_kernel(self):
        """The kernel the layer computes with: `kernel * mask`."""
        return ops.multiply(self.kernel, self.mask)

    def call(self, inputs, *args, **kwargs):
        # A stateless scope shadows any outer one (JAX training maps every
        # variable in its own), so map all of the layer's variables to their
        # current values and the kernel to kernel * mask.
        kernel = self.kernel
        mapping = [
            (variable, self.masked_kernel() if variable is kernel else variable.value)
            for variable in self.layer.variables
        ]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, *args, **kwargs)
        for loss in scope.losses:  # the inner layer's activity regularizer and add_loss calls
            self.add_loss(loss)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "graph": self.graph.get_config(), "self_loops": self.self_loops}


class _MaskedInitializer:
    """The wrapped layer's kernel initializer times the wrapper's mask (used only while the kernel is created)."""

    def __init__(self, initializer, wrapper):
        self.initializer = keras.initializers.get(initializer)
        self.wrapper = wrapper

    def __call__(self, shape, dtype=None):
        wrapper = self.wrapper
        mask = kernel_mask(wrapper.graph, shape, wrapper.layout, wrapper.self_loops)
        return ops.multiply(self.initializer(shape, dtype=dtype), ops.cast(mask, dtype or "float32"))
