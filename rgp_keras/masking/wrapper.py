"""`RegularGraphPruning`: the Keras 3 wrapper that applies a fixed RGP mask to a layer's kernel."""

import keras
import numpy as np
from keras import ops

from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.graph import RegularGraph
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.masking.masks import group_mask, kernel_mask, prunable_kernel
from rgp_keras.model_walk import to_numpy

# 2: the mask is rebuilt from the graph, not saved (1: it was a non-trainable weight; such files still load).
FORMAT_VERSION = 2
# Name of the initializer attribute that belongs to each maskable kernel attribute.


@keras.saving.register_keras_serializable(package="rgp_keras")
class RegularGraphPruning(keras.layers.Wrapper):
    """Wraps a Dense/Conv layer and multiplies a fixed regular-graph mask into its kernel.

    The mask (input channel group i -> output channel group j kept iff (i, j)
    is an edge of `graph`) is a constant rebuilt from the graph in the config
    at build time: not a weight, not saved, not counted by `count_params`.
    Every forward pass uses `kernel * mask`, so masked weights contribute
    exactly zero and receive zero gradient; the wrapped layer computes in
    the wrapper's dtype policy.

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
            name = layer_type(self.layer)[1].initializer
            initializer = getattr(self.layer, name)
            setattr(self.layer, name, _MaskedInitializer(initializer, self))
            try:
                super().build(input_shape)
            finally:
                setattr(self.layer, name, initializer)
        else:
            super().build(input_shape)
        kernel = self.kernel
        # The mask is a constant rebuilt from the graph in the config: neither a weight, nor saved, nor
        # counted by count_params. When both channel counts divide by n, the kernel is viewed as
        # (..., n, in/n, n, out/n) blocks and multiplied by the n x n block mask (n^2 numbers held);
        # otherwise by the channel-pair mask broadcast over the kernel window.
        window = (1,) * (len(kernel.shape) - 2)
        pairs = kernel_mask(self.graph, (*window, *kernel.shape[-2:]), self.layout, self.self_loops)
        self.density = float(pairs.mean())
        nodes = self.graph.nodes
        if kernel.shape[-2] % nodes == 0 and kernel.shape[-1] % nodes == 0:
            blocks = group_mask(self.graph, self.self_loops)
            blocks = blocks.T if self.layout == "conv_transpose" else blocks
            self._blocks = blocks[:, None, :, None].astype(kernel.dtype)
            self._pairs = None
        else:
            self._blocks, self._pairs = None, pairs.astype(kernel.dtype)
        # Zero the masked weights of the variable itself, so that what is saved,
        # stripped or decayed by an optimizer is exactly what is computed with.
        kernel.assign(self.masked_kernel())
        self.built = True

    @property
    def kernel(self):
        """The wrapped layer's (unmasked) kernel variable."""
        return getattr(self.layer, self.kernel_attribute)

    @property
    def mask(self):
        """The kernel-shaped mask (1.0 kept, 0.0 pruned), built from the graph on request."""
        return self._apply(ops.ones(self.kernel.shape, dtype=self.kernel.dtype))

    def masked_kernel(self):
        """The kernel the layer computes with: `kernel * mask`."""
        return self._apply(self.kernel)

    def _apply(self, kernel):
        if self._blocks is None:
            return ops.multiply(kernel, ops.convert_to_tensor(self._pairs))
        *window, rows, columns = kernel.shape
        nodes = self.graph.nodes
        blocked = ops.reshape(kernel, (*window, nodes, rows // nodes, nodes, columns // nodes))
        return ops.reshape(ops.multiply(blocked, ops.convert_to_tensor(self._blocks)), kernel.shape)

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
        return {**super().get_config(), "graph": self.graph.get_config(), "self_loops": self.self_loops,
                "format_version": FORMAT_VERSION}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        version = config.pop("format_version", 1)
        if version > FORMAT_VERSION:
            raise InputValueError(
                f"{config.get('name', 'RegularGraphPruning')!r} was saved by a newer rgp_keras (wrapper format "
                f"{version}; this version reads up to {FORMAT_VERSION}). Upgrade rgp_keras."
            )
        return super().from_config(config, custom_objects=custom_objects)

    def load_own_variables(self, store):
        """Files of wrapper format 1 stored the mask as a weight: check it against the graph, keep nothing."""
        own = self._trainable_variables + self._non_trainable_variables  # Keras's own split, as its loader uses
        if len(store.keys()) == 1 and not own:
            saved = np.asarray(store["0"])
            if saved.shape != tuple(self.kernel.shape) or np.any((saved != 0) != (to_numpy(self.mask) != 0)):
                raise InputValueError(
                    f"The mask saved for {self.name!r} is not the one its graph gives; the file is inconsistent."
                )
            return
        super().load_own_variables(store)


class _MaskedInitializer:
    """The wrapped layer's kernel initializer times the wrapper's mask (used only while the kernel is created)."""

    def __init__(self, initializer, wrapper):
        self.initializer = keras.initializers.get(initializer)
        self.wrapper = wrapper

    def __call__(self, shape, dtype=None):
        wrapper = self.wrapper
        mask = kernel_mask(wrapper.graph, shape, wrapper.layout, wrapper.self_loops)
        return ops.multiply(self.initializer(shape, dtype=dtype), ops.cast(mask, dtype or "float32"))
