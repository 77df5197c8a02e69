"""The layer registry: every entry names a real Keras layer, its kernel and initializer attributes exist, and
lookups follow subclasses but not backend operations of the same name."""

import re

import keras
import pytest

from rgp_keras.masking.layer_types import KERNEL_LAYOUTS, REGISTRY, layer_type

KERNEL_TYPES = sorted(name for name, kind in REGISTRY.items() if kind.kernel)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_is_a_keras_layer_and_resolves_to_itself(name):
    cls = getattr(keras.layers, name)
    assert issubclass(cls, keras.layers.Layer)
    kind = REGISTRY[name]
    assert kind.channels in (None, "kernel", "channelwise", "merge", "concat", "flatten", "reshape")
    assert (kind.layout in KERNEL_LAYOUTS) == bool(kind.kernel) and not (kind.kernel and kind.not_prunable)
    assert kind.compact_as is None or kind.layout in ("dense", "conv")


@pytest.mark.parametrize("name", KERNEL_TYPES)
def test_kernel_and_initializer_attributes_exist(name):
    kind = REGISTRY[name]
    rank = 1 if name == "Dense" else int(re.search(r"(\d)D", name).group(1)) + 1
    layer = getattr(keras.layers, name)(8) if name == "Dense" else getattr(keras.layers, name)(8, 1)
    layer.build((None, *([4] * (rank - 1)), 8))
    kernel = getattr(layer, kind.kernel)
    assert len(kernel.shape) == (2 if kind.layout == "dense" else rank + 1)
    assert isinstance(getattr(layer, kind.initializer), keras.initializers.Initializer)


def test_subclasses_resolve_to_their_keras_base_and_backend_operations_do_not():
    class MyConv(keras.layers.Conv2D):
        pass

    assert layer_type(MyConv(4, 3))[0] == "Conv2D"
    assert layer_type(keras.layers.Add())[0] == "Add"
    from keras.src.ops.numpy import Add as AddOperation  # what keras.ops.add builds in a functional model
    from keras.src.ops.numpy import Flip

    name, kind = layer_type(AddOperation())  # an element-wise operation, not the Add layer's entry
    assert name == "Add" and kind is not REGISTRY["Add"] and kind.channels == "merge" and kind.kernel is None
    assert layer_type(Flip()) == (None, None)
    assert layer_type(keras.layers.Layer()) == (None, None)
