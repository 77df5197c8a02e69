"""Tests for rgp_keras.data_aware.calibration through prune_regular_graph(calibration_data=...): accepted forms,
bad inputs."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from rgp_keras import prune_regular_graph, pruning_summary
from rgp_keras.data_aware.calibration import Calibration, mix_count
from rgp_keras.graph import RegularGraph


def calibration_arrays(data, shapes, names, samples=None, batch_size=7):
    """Every row of the `Calibration` of `data`, read batch by batch, as one array per input."""
    calibration = Calibration(data, shapes, names, samples=samples, batch_size=batch_size)
    batches = [arrays for _, arrays in calibration.batches()]
    assert all(len(arrays[0]) <= batch_size for arrays in batches)
    return [np.concatenate(column) for column in zip(*batches)]


def with_mixes(arrays, count, hold_out):
    calibration = Calibration(arrays, [(None, *a.shape[1:]) for a in arrays], [f"x{i}" for i in range(len(arrays))],
                              batch_size=64)
    mixed = [arrays for _, arrays in calibration.with_mixes(count, hold_out).batches()]
    return [np.concatenate(column) for column in zip(*mixed)]


@pytest.fixture(scope="module")
def graph16():
    return RegularGraph.random(16, 4, seed=0)


def test_arrays_datasets_and_generators_give_the_same_samples():
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float64")
    y = np.arange(40)
    expected = x.astype("float32")
    shapes, names = [(None, 6)], ["x"]
    from_array = calibration_arrays(x, shapes, names)[0]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # (x, y) batches: labels ignored
    from_dataset = calibration_arrays(dataset, shapes, names)[0]
    from_generator = calibration_arrays((x[i : i + 8] for i in range(0, 40, 8)), shapes, names)[0]
    for got in (from_array, from_dataset, from_generator):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    assert x.dtype == np.float64  # the user's array is not converted in place


def test_an_endless_generator_is_read_up_to_the_sample_limit():
    def endless():
        while True:
            yield np.ones((10, 3), "float32"), np.zeros(10)

    assert len(calibration_arrays(endless(), [(None, 3)], ["x"], samples=25)[0]) == 25


def test_multi_input_data_by_list_and_by_name():
    a, b = np.ones((5, 2)), np.zeros((5, 3))
    shapes, names = [(None, 2), (None, 3)], ["a", "b"]
    for data in ([a, b], {"b": b, "a": a}):
        got = calibration_arrays(data, shapes, names)
        assert [g.shape for g in got] == [(5, 2), (5, 3)]


@pytest.mark.parametrize(
    "data, shapes, names, error, words",
    [
        (np.ones((4, 5)), [(None, 6)], ["x"], ValueError, ["shape (4, 5)", "(samples, 6)"]),
        (np.ones((4, 6, 1)), [(None, 6)], ["x"], ValueError, ["shape (4, 6, 1)", "(samples, 6)"]),
        (np.array([["a"] * 6] * 2), [(None, 6)], ["x"], TypeError, ["dtype <U1", "numeric"]),
        (np.ones((0, 6)), [(None, 6)], ["x"], ValueError, ["no samples"]),
        (iter([]), [(None, 6)], ["x"], ValueError, ["yielded nothing"]),
        (np.full((3, 6), np.nan), [(None, 6)], ["x"], ValueError, ["18 NaN or infinite", "finite"]),
        (np.ones((3, 2)), [(None, 2), (None, 3)], ["a", "b"], ValueError, ["2 inputs ['a', 'b']", "single array"]),
        ([np.ones((3, 2))], [(None, 2), (None, 3)], ["a", "b"], ValueError, ["holds 1 arrays", "one array per input"]),
        ({"a": np.ones((3, 2))}, [(None, 2), (None, 3)], ["a", "b"], ValueError, ["without the model's inputs ['b']"]),
        (
            [np.ones((3, 2)), np.ones((4, 3))],
            [(None, 2), (None, 3)],
            ["a", "b"],
            ValueError,
            ["different sample counts"],
        ),
    ],
)
def test_bad_calibration_data_is_named_with_what_is_accepted(data, shapes, names, error, words):
    with pytest.raises(error) as info:
        calibration_arrays(data, shapes, names)
    for word in words:
        assert word in str(info.value)


def test_bad_sample_counts_are_refused():
    with pytest.raises(ValueError, match="`calibration_samples` must be an integer >= 1, got 0"):
        calibration_arrays(np.ones((3, 2)), [(None, 2)], ["x"], samples=0)


def test_bad_data_leaves_the_model_untouched_and_builds_nothing(mlp_model, graph16):
    before = [w.copy() for w in mlp_model.get_weights()]
    with pytest.raises(ValueError, match=r"shape \(8, 63\)"):
        prune_regular_graph(mlp_model, graph=graph16, calibration_data=np.ones((8, 63)))
    with pytest.raises(ValueError, match="`calibration_samples` needs `calibration_data`"):
        prune_regular_graph(mlp_model, graph=graph16, calibration_samples=10)
    with pytest.raises(TypeError, match="`assign_channels` must be True or False"):
        prune_regular_graph(mlp_model, graph=graph16, assign_channels="yes")
    with pytest.raises(ValueError, match="`calibration_data` needs a model, got the layer .*select it with `layers=`"):
        prune_regular_graph(mlp_model.layers[1], graph=graph16, calibration_data=np.ones((8, 128)))
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp_model.get_weights()))


def test_a_multi_input_model_given_one_array_is_refused(graph16):
    a, b = keras.Input((32,), name="a"), keras.Input((32,), name="b")
    hidden = keras.layers.Dense(64)(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Dense(64)(hidden)))
    with pytest.raises(ValueError, match=r"2 inputs \['a', 'b'\]"):
        prune_regular_graph(model, graph=graph16, calibration_data=np.ones((4, 32)))
    with pytest.warns(UserWarning, match="fewer rows than weights"):  # 4 samples: a regularised fit
        pruned = prune_regular_graph(
            model, graph=graph16, calibration_data={"a": np.ones((4, 32)), "b": np.ones((4, 32))}
        )
    assert pruned.layers[-2].data_aware["error_after"] <= pruned.layers[-2].data_aware["error_before"]


def test_auto_mixes_grow_small_sets_eightfold_and_leave_large_inputs_alone():
    small = (512, 28 * 28)
    assert mix_count("auto", *small, ["float32"], ["x"]) == (7 * 512, None)
    count, why = mix_count("auto", 256, 224 * 224 * 3, ["float32"], ["x"])
    assert count == 0 and "large enough" in why
    # the set stops at 2**23 input values: 1000 samples of 4096 values -> 2048 in all, 1048 mixes
    assert mix_count("auto", 1000, 4096, ["float32"], ["x"])[0] == 1048
    assert mix_count(10, *small, ["float32"], ["x"]) == (10, None)
    count, why = mix_count("auto", *small, ["float32"], ["x"], rows_per_weight=32)  # convolutions: rows enough
    assert count == 0 and ">= 32 rows per weight" in why
    assert mix_count(10, *small, ["float32"], ["x"], rows_per_weight=100) == (10, None)
    # mixes cost a forward pass each: 2**33 MACs in all; 10 M MACs a sample -> 858 rows, 346 mixes for 512
    assert mix_count("auto", *small, ["float32"], ["x"], sample_macs=10_000_000)[0] == 346
    count, why = mix_count("auto", *small, ["float32"], ["x"], sample_macs=87_000_000)  # the README's CNN
    assert count == 0 and "87 M MACs a sample" in why
    count, why = mix_count("auto", 8, 8, ["float32", "int32"], ["pixels", "ids"])
    assert count == 0 and "'ids' (int32) is not floating-point" in why


@pytest.mark.parametrize("mixes", ["many", -1, 2.5, True, None])
def test_bad_mix_counts_say_what_is_accepted(mixes):
    with pytest.raises(ValueError, match=r'`calibration_mixes` must be "auto" or an integer >= 0 .* got'):
        mix_count(mixes, 4, 2, ["float32"], ["x"])


def test_explicit_mixes_of_integer_inputs_are_refused():
    with pytest.raises(ValueError, match=r"'ids' \(int32\) is not floating-point .* calibration_mixes=0"):
        mix_count(5, 4, 2, ["int32"], ["ids"])


def test_mixes_are_convex_and_never_join_held_out_and_fitted_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 3)).astype("float32"), rng.normal(size=(30, 2, 2)).astype("float32")
    mixed = with_mixes([a, b], 200, hold_out=5)
    assert [m.shape for m in mixed] == [(230, 3), (230, 2, 2)]
    np.testing.assert_array_equal(mixed[0][:30], a)
    samples = np.concatenate([a, b.reshape(30, 4)], axis=1)  # 7 values: a pair and its weight are found exactly
    held = np.arange(30) % 5 == 4
    for position in range(30, 230):
        row = np.concatenate([mixed[0][position], mixed[1][position].ravel()])
        direction = samples[:, None] - samples[None]  # (i, j): x_i - x_j
        offset = row - samples[None]  # row - x_j
        w = np.einsum("ijk,ijk->ij", direction, offset) / np.maximum(
            np.einsum("ijk,ijk->ij", direction, direction), 1e-12
        )
        residual = np.abs(w[..., None] * direction - offset).max(axis=-1)
        i, j = np.unravel_index(np.argmin(np.where((w > -1e-6) & (w < 1 + 1e-6), residual, np.inf)), w.shape)
        assert residual[i, j] < 1e-5, position
        parents = [i] * bool(w[i, j] > 1e-6) + [j] * bool(
            w[i, j] < 1 - 1e-6
        )  # a mix of one sample with itself: any partner
        assert all(held[parent] == (position % 5 == 4) for parent in parents), position
    np.testing.assert_array_equal(with_mixes([a, b], 200, hold_out=5)[1], mixed[1])  # deterministic


def test_mixes_reach_the_fit_and_the_summary_says_how_many(mlp_model, graph16):
    x = np.random.default_rng(0).normal(size=(100, 64)).astype("float32")
    kept = x.copy()
    mixed = prune_regular_graph(mlp_model, graph=graph16, calibration_data=x)
    with pytest.warns(UserWarning, match="fewer rows than weights"):  # the classifier: 129 weights, 100 rows
        plain = prune_regular_graph(mlp_model, graph=graph16, calibration_data=x, calibration_mixes=0)
    np.testing.assert_array_equal(x, kept)  # the user's samples are not modified
    assert "reconstruction fit on 100 samples + 700 mixes of pairs" in str(pruning_summary(mixed))
    assert "reconstruction fit on 100 samples + 0 mixes of pairs" in str(pruning_summary(plain))
    assert not all(np.array_equal(p, q) for p, q in zip(mixed.get_weights(), plain.get_weights()))
    with pytest.raises(ValueError, match="`calibration_mixes` needs `calibration_data`"):
        prune_regular_graph(mlp_model, graph=graph16, calibration_mixes=0)


def test_a_generator_whose_batches_change_shape_is_refused_naming_the_first_bad_batch():
    def batches():
        yield np.ones((4, 5, 3), "float32")
        yield np.ones((4, 5, 3), "float32")
        yield np.ones((4, 7, 3), "float32")

    with pytest.raises(ValueError, match=r"batch 2 \(counting from 0\) holds samples of shape \(7, 3\), but batch "
                                         r"0's are \(5, 3\); every batch must hold samples of one shape"):
        Calibration(batches(), [(None, None, 3)], ["x"], batch_size=8)


def test_nan_in_a_later_batch_of_a_stream_is_refused_before_anything_changes(mlp_model, graph16):
    before = [w.copy() for w in mlp_model.get_weights()]

    def batches():
        for i in range(4):
            x = np.ones((8, 64), "float32")
            x[2, 3] = np.inf if i == 3 else 0.0
            yield x

    with pytest.raises(ValueError, match=r"input '.*' \(batch 3\) holds 1 NaN or infinite values; pass finite"):
        prune_regular_graph(mlp_model, graph=graph16, calibration_data=batches())
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp_model.get_weights()))


@pytest.mark.parametrize("size", [0, -3, 2.5, "32", True])
def test_bad_batch_sizes_say_what_is_accepted(mlp_model, graph16, size):
    before = [w.copy() for w in mlp_model.get_weights()]
    with pytest.raises(ValueError, match=r"`calibration_batch_size` must be an integer >= 1 .* got"):
        prune_regular_graph(mlp_model, graph=graph16, calibration_data=np.ones((8, 64)), calibration_batch_size=size)
    with pytest.raises(ValueError, match="`calibration_batch_size` needs `calibration_data`"):
        prune_regular_graph(mlp_model, graph=graph16, calibration_batch_size=8)
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp_model.get_weights()))


def test_a_stream_is_read_once_and_spilled_to_disk_beyond_the_memory_budget(monkeypatch):
    from rgp_keras.data_aware import stream

    monkeypatch.setattr(stream, "MEMORY_BYTES", 400)  # 2 chunks of 7 samples of 6 float32 values
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
    reads = []

    def batches():
        for i in range(0, 40, 16):
            reads.append(i)
            yield x[i : i + 16]

    calibration = Calibration(batches(), [(None, 6)], ["x"], batch_size=7)
    folder = calibration._store.folder
    assert len(os.listdir(folder)) > 0
    for _ in range(2):
        np.testing.assert_array_equal(np.concatenate([a[0] for _, a in calibration.batches()]), x)
    assert reads == [0, 16, 32]
    mixed = calibration.with_mixes(20, hold_out=5)
    assert sum(len(a[0]) for _, a in mixed.batches()) == 60
    del calibration, mixed
    import gc

    gc.collect()
    assert not os.path.exists(folder)


def test_the_store_reads_arrays_back_aligned_and_tensorflow_shares_them():
    """Spilled arrays come back equal, C-contiguous and 64-byte aligned, so that a TensorFlow pass takes a float
    array without copying it; other arrays (unaligned, integer) are converted."""
    import tensorflow as tf

    from rgp_keras.data_aware import stream

    store = stream.Store(memory_bytes=0)
    arrays = {"f": np.random.default_rng(0).normal(size=(5, 3, 7)).astype("float32"),
              "i": np.arange(12, dtype="int64").reshape(3, 4), "t": tf.ones((2, 3))}
    for key, value in arrays.items():
        store.put(key, value)
    for key, value in arrays.items():
        back = store.get(key)
        np.testing.assert_array_equal(back, np.asarray(value))
        assert back.flags.c_contiguous and back.ctypes.data % 64 == 0
    shared = store.get("f")
    tensor = stream._tensorflow_value(shared)
    shared[0, 0, 0] = 42.0  # the tensor views the same memory
    assert float(tensor[0, 0, 0]) == 42.0
    unaligned = np.frombuffer(bytes(4 * 13), "float32")[1:]  # 4 bytes past an aligned start at best
    assert unaligned.ctypes.data % 64 != 0
    np.testing.assert_array_equal(stream._tensorflow_value(unaligned).numpy(), unaligned)
    assert stream._tensorflow_value(store.get("i")).dtype == tf.int64
    store.close()
