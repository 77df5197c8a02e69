"""Keras's own layer conformance test (`run_layer_test`: serialisation, build, training, mixed precision) on
RegularGraphPruning around every prunable layer type."""

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

from rgp_keras import RegularGraphPruning
from rgp_keras.graph import RegularGraph

GRAPH = RegularGraph.ring_lattice(8, 2)
CASES = {
    "Dense": (lambda: keras.layers.Dense(16), (2, 16)),
    "Conv1D": (lambda: keras.layers.Conv1D(16, 3), (2, 8, 16)),
    "Conv2D": (lambda: keras.layers.Conv2D(16, 3), (2, 6, 6, 16)),
    "Conv3D": (lambda: keras.layers.Conv3D(16, 3), (2, 4, 4, 4, 16)),
    "Conv2DTranspose": (lambda: keras.layers.Conv2DTranspose(16, 3), (2, 4, 4, 16)),
    "SeparableConv2D": (lambda: keras.layers.SeparableConv2D(16, 3), (2, 6, 6, 16)),
}


@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")  # run_layer_test's own fit
@pytest.mark.parametrize("kind", sorted(CASES))
def test_run_layer_test(kind):
    make, input_shape = CASES[kind]
    inner = make()
    expected = make().compute_output_shape(input_shape)
    case = TestCase()
    case.run_layer_test(
        RegularGraphPruning,
        init_kwargs={"layer": inner, "graph": GRAPH},
        input_shape=input_shape,
        expected_output_shape=expected,
        expected_num_non_trainable_weights=0,  # the mask is rebuilt from the graph, not a weight
        expected_num_losses=0,
        supports_masking=False,
    )


def test_a_dtype_policy_the_inner_layer_cannot_take_is_refused():
    inner = keras.layers.Dense(16)
    inner.build((None, 16))
    with pytest.raises(ValueError, match="dtype policy 'float16'.*'float32' variables.*float32 or mixed_float16"):
        RegularGraphPruning(inner, GRAPH, dtype="float16")
    wrapper = RegularGraphPruning(keras.layers.Dense(16), GRAPH, dtype="mixed_float16")
    out = wrapper(np.ones((2, 16), "float32"))
    assert (
        keras.backend.standardize_dtype(out.dtype) == "float16" and wrapper.layer.dtype_policy.name == "mixed_float16"
    )
