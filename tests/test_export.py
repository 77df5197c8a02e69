"""Tests for LiteRT export: compact kernels (Keras-level and LiteRT parity), sparse export,
quantization, the report, and bad input."""

import os

import keras
import numpy as np
import pytest

from rgp_keras import export_tflite, prune_regular_graph, run_tflite, strip_pruning
from rgp_keras.datasets import load_fashion_mnist
from rgp_keras.errors import ExportCheckError
from rgp_keras.export import (
    CompactKernel,
    FoldedAway,
    GatherKernel,
    ScatterKernel,
    channel_blocks,
    compact_model,
    estimated_latency_ratios,
)
from rgp_keras.graph import RegularGraph
from rgp_keras.litert import load_interpreter
from rgp_keras.masking.masks import kernel_mask
from rgp_keras.model_walk import to_numpy

layers = keras.layers


@pytest.fixture(scope="module")
def graph16():
    return RegularGraph.random(16, 2, seed=0)


@pytest.fixture(scope="module")
def real_images():
    """Fashion-MNIST test images padded to 32x32 and repeated to 3 channels, in [0, 1]."""
    (_, _), (x_test, y_test) = load_fashion_mnist()
    x = np.pad(x_test[:64], ((0, 0), (2, 2), (2, 2))).astype("float32") / 255.0
    return np.repeat(x[..., None], 3, axis=-1)


def randomize_kernels(model, seed=0):
    """Non-trivial weights so that parity checks compare real numbers (masks still apply)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.endswith(("kernel", "bias")) and weight.trainable:
            scale = 1.0 / np.sqrt(np.prod(weight.shape[:-1])) if weight.path.endswith("kernel") else 0.1
            weight.assign(rng.normal(0, scale, weight.shape).astype("float32"))


def vgg(channels=(64, 128, 256)):
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(channels[0], 3, padding="same", activation="relu")(inputs)
    for width in channels:
        x = layers.Conv2D(width, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(10)(x))


@pytest.mark.parametrize(
    "layer, shape",
    [
        (layers.Conv2D(64, 3, padding="same"), (9, 9, 48)),
        (layers.Conv2D(100, 3, strides=2, padding="valid", activation="relu"), (11, 11, 70)),
        (layers.Conv2D(64, 3, dilation_rate=2, padding="same", use_bias=False), (12, 12, 72)),
        (layers.Conv2D(64, (1, 3), strides=(2, 1), padding="same"), (8, 9, 64)),
        (layers.Conv1D(80, 5, padding="causal", activation="tanh"), (20, 72)),
        (layers.Dense(70, activation="relu"), (90,)),
        (layers.Dense(96), (7, 64)),
    ],
    ids=["same", "uneven-strided-valid", "dilated-nobias", "rect-kernel", "conv1d-causal",
         "dense-uneven", "dense-3d-input"],
)
@pytest.mark.parametrize("layout", ["gather", "slices", "scatter"])
def test_compact_kernel_equals_the_masked_layer(layer, shape, layout, graph16):
    model = keras.Sequential([keras.Input(shape), layer])
    pruned = prune_regular_graph(model, graph=graph16, skip_first=False, skip_last=False)
    randomize_kernels(pruned)
    stripped = strip_pruning(pruned)
    compact, compacted, not_compacted = compact_model(stripped, layout=layout)
    # scatter needs input channels divisible by the 16 groups; the others fall back to gather
    expected_layout = layout if layout != "scatter" or shape[-1] % 16 == 0 else "gather"
    assert compacted == {layer.name: expected_layout} and not not_compacted
    assert isinstance(compact.layers[0], CompactKernel) and compact.layers[0].nodes == 16
    x = np.random.default_rng(1).normal(size=(3, *shape)).astype("float32")
    np.testing.assert_allclose(to_numpy(compact(x)), to_numpy(pruned(x)),
                               atol=1e-5, rtol=1e-5)
    kernel_size = np.prod(stripped.layers[0].kernel.shape)
    held = np.prod(compact.layers[0].conv.kernel.shape)
    # k/n of the kernel, plus zero padding when channels do not divide into 16 groups
    assert held <= kernel_size * 2 / 16 * 1.6


def test_channel_blocks_recovers_the_graph_from_the_zeros():
    graph = RegularGraph.random(16, 4, seed=3)
    mask = kernel_mask(graph, (3, 3, 64, 96), "conv")
    blocks = channel_blocks(np.where(mask, 1.0, 0.0))
    np.testing.assert_array_equal(blocks, graph.adjacency)
    assert channel_blocks(np.ones((3, 3, 64, 96))) is None


def test_compact_and_sparse_litert_outputs_equal_keras_on_real_images(graph16, real_images, tmp_path):
    pruned = prune_regular_graph(vgg(), graph=graph16)
    randomize_kernels(pruned)
    expected = to_numpy(pruned(real_images))
    compact = export_tflite(pruned, tmp_path / "compact.tflite")
    sparse = export_tflite(pruned, tmp_path / "sparse.tflite", compact=False)
    for report in (compact, sparse):
        np.testing.assert_allclose(run_tflite(report.path, real_images), expected, atol=1e-4, rtol=0)
    assert len(compact.compacted) == 4 and not compact.not_compacted  # three convs and the hidden Dense
    assert set(compact.compacted.values()) == {"gather", "scatter"}  # narrow output groups scatter
    assert compact.params < 0.25 * compact.dense_params and compact.macs < 0.25 * compact.dense_macs
    assert sparse.params == sparse.dense_params and sparse.macs == sparse.dense_macs
    assert compact.size_bytes < 1.1 * 4 * compact.params  # float32 kept weights, little else
    assert sparse.gzip_bytes < sparse.size_bytes and "compact" in str(compact) and "MACs" in str(compact)
    assert sorted(os.listdir(tmp_path)) == ["compact.tflite", "sparse.tflite"]


@pytest.mark.parametrize("layout", ["gather", "slices", "scatter"])
def test_each_layout_runs_in_litert_like_keras(layout, graph16, real_images, tmp_path):
    pruned = prune_regular_graph(vgg((32, 48, 64)), graph=graph16)
    randomize_kernels(pruned)
    report = export_tflite(pruned, tmp_path / f"{layout}.tflite", layout=layout)
    assert set(report.compacted.values()) == {layout} and f"{len(report.compacted)} {layout})" in str(report)
    np.testing.assert_allclose(run_tflite(report.path, real_images[:8]),
                               to_numpy(pruned(real_images[:8])), atol=1e-4, rtol=0)
    operations = {detail["op_name"] for detail in load_interpreter(report.path)._get_ops_details()}
    # slices pick channels with operations XNNPACK runs; gather and scatter with LiteRT's own GATHER
    assert ("GATHER" in operations) == (layout != "slices")
    assert {"STRIDED_SLICE", "CONCATENATION"} <= operations if layout == "slices" else True


def test_scatter_layout_says_what_it_needs(graph16):
    layer = layers.Conv2D(64, 3)
    layer.build((None, 8, 8, 72))
    blocks = RegularGraph.random(16, 2, seed=0).adjacency
    with pytest.raises(ValueError, match=r"input channels divisible by the 16 groups.*72 input channels.*'gather'"):
        ScatterKernel(layer, blocks)
    assert GatherKernel(layer, blocks).conv_input_width == 16 * 2 * 5  # n groups x k input groups of 4-5


def test_layout_estimates_follow_the_measured_tile_widths():
    # benchmarks/gather_layouts.py: at n = 16, 64-channel 3x3 convs (groups of 4) run faster scattered,
    # 256-channel ones (groups of 16) gathered; 1x1 expansions gather, 1x1 projections scatter.
    def ratios(channels_in, channels_out, size, degree):
        layer = layers.Conv2D(channels_out, size)
        layer.build((None, 8, 8, channels_in))
        return estimated_latency_ratios(layer, RegularGraph.random(16, degree, seed=0).adjacency)

    assert ratios(64, 64, 3, 4)["scatter"] < 0.6 < ratios(64, 64, 3, 4)["gather"]
    assert ratios(256, 256, 3, 2)["gather"] < ratios(256, 256, 3, 2)["scatter"] < 0.2
    assert ratios(64, 384, 1, 2)["gather"] < 0.5 < ratios(64, 384, 1, 2)["scatter"]
    assert ratios(384, 64, 1, 2)["scatter"] < 0.6 < 1 < ratios(384, 64, 1, 2)["gather"]
    assert "scatter" not in ratios(72, 64, 1, 2)  # input groups of 4.5 channels
    # one-off probe (3x3 convs, 1 thread): with 16-channel groups slices ran 0.95x gather (8/2 on 128 channels,
    # 16/4 on 256); with 4-channel groups (32/4 on 128) 1.16x: a call per slice
    wide = lambda nodes, degree, channels: estimated_latency_ratios(
        _built(layers.Conv2D(channels, 3, padding="same"), (None, 14, 14, channels)),
        RegularGraph.random(nodes, degree, seed=0).adjacency, positions=14 * 14)
    assert wide(8, 2, 128)["slices"] < wide(8, 2, 128)["gather"]
    assert wide(16, 4, 256)["slices"] < wide(16, 4, 256)["gather"]
    assert wide(32, 4, 128)["gather"] < wide(32, 4, 128)["slices"]


def test_batch_one_dense_layers_stay_dense_when_picking_channels_costs_more_than_it_saves():
    # benchmarks/layout_choice.py, MLP rows: a 512 -> 512 Dense layer on vectors at n/k = 32/8 ran 1.3x slower
    # compact (each channel LiteRT's GATHER picks costs ~50 MACs per call); the same kernel on a 16x16 map is
    # compacted, its per-call gathers shared out over 256 positions.
    def compacted(shape, batch_size=None):
        model = keras.Sequential([keras.Input(shape, batch_size=batch_size), layers.Dense(512), layers.Dense(512),
                                  layers.Dense(10)])
        stripped = strip_pruning(prune_regular_graph(model, degree=8, nodes=32, seed=0))
        return compact_model(stripped)[1:], model.layers[1].name

    (vectors, why), name = compacted((784,))
    assert not vectors
    assert "1 output position(s) per call: picking its input channels costs more" in why[name]
    (maps, _), name = compacted((16, 16, 784))
    assert maps[name] in ("gather", "slices")
    (batch, _), name = compacted((784,), batch_size=256)  # a fixed batch shares the gathers out too
    assert batch[name] in ("gather", "slices")


def test_uncompacted_dense_layers_are_stored_dense_not_block_sparse(tmp_path):
    # Sparse-encoded, two 512 -> 512 Dense layers at 75 % zeros made an MLP 1.42x slower than dense in LiteRT.
    model = keras.Sequential([keras.Input((784,)), layers.Dense(512), layers.Dense(512), layers.Dense(512),
                              layers.Dense(10)])
    pruned = prune_regular_graph(model, degree=8, nodes=32, seed=0)
    fast = export_tflite(pruned, tmp_path / "fast.tflite")
    assert not fast.compacted
    hidden = [layer.name for layer in model.layers[1:3]]
    assert any("encoding not used" in note and all(name in note for name in hidden) for note in fast.notes)
    small = export_tflite(pruned, tmp_path / "small.tflite", compact=False)
    assert small.size_bytes < 0.8 * fast.size_bytes
    assert any("block-sparse FULLY_CONNECTED" in note and "compact=True" in note for note in small.notes)


def test_more_threads_keep_more_layers_dense(tmp_path):
    # benchmarks/layout_choice.py --threads 2: dense GEMMs share out over threads, the layouts' GATHERs do not.
    layer = layers.Conv2D(128, 3)
    layer.build((None, 16, 16, 128))
    blocks = RegularGraph.random(64, 8, seed=0).adjacency
    one, two, four = (estimated_latency_ratios(layer, blocks, threads) for threads in (1, 2, 4))
    assert all(one[name] < two[name] < four[name] for name in one)

    model = keras.Sequential([keras.Input((16, 16, 128)), layers.Conv2D(128, 3, padding="same"),
                              layers.Conv2D(128, 3, padding="same"), layers.Conv2D(10, 1)])
    stripped = strip_pruning(prune_regular_graph(model, degree=8, nodes=64, seed=0))
    name = model.layers[1].name
    assert compact_model(stripped)[1] == {name: "scatter"}
    _, compacted, not_compacted = compact_model(stripped, threads=4)
    assert not compacted
    assert "with 4 thread(s)" in not_compacted[name] and "faster with one thread" in not_compacted[name]
    report = export_tflite(stripped, tmp_path / "m.tflite", threads=4)
    assert report.macs == report.dense_macs and name in report.not_compacted


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"threads": 0}, ValueError, r"`threads` must be an integer >= 1, got 0"),
        ({"threads": "2"}, TypeError, r"`threads` must be an integer, got '2'"),
        ({"threads": 2, "compact": False}, ValueError, r"`threads` chooses compact layouts; it needs compact=True"),
    ],
)
def test_bad_threads_are_named(kwargs, error, message, graph16, tmp_path):
    pruned = prune_regular_graph(vgg((32, 48, 64)), graph=graph16)
    with pytest.raises(error, match=message):
        export_tflite(pruned, tmp_path / "m.tflite", **kwargs)
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("layout", ["gather", "scatter"])
def test_batch_norm_after_a_compact_kernel_is_folded_into_it(layout, graph16):
    pruned = prune_regular_graph(vgg((32, 48, 64)), graph=graph16)
    randomize_kernels(pruned)
    rng = np.random.default_rng(2)
    for layer in pruned.layers:
        if isinstance(layer, layers.BatchNormalization):
            for weight in layer.weights:  # gamma, beta, moving mean, moving variance
                weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
    stripped = strip_pruning(pruned)
    compact, compacted, _ = compact_model(stripped, layout=layout)
    folded = [new for old, new in zip(stripped.layers, compact.layers) if isinstance(old, layers.BatchNormalization)]
    assert len(compacted) == 4 and len(folded) == 3 and all(isinstance(f, FoldedAway) for f in folded)
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(compact(x)), to_numpy(pruned(x)),
                               atol=1e-4, rtol=1e-4)


def test_batch_norm_is_not_folded_into_a_kernel_whose_output_is_also_a_model_output(graph16):
    inputs = keras.Input((8, 8, 32))
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
    tapped = layers.Conv2D(64, 3, padding="same")(x)
    normalised = layers.BatchNormalization()(tapped)
    head = layers.Dense(3)(layers.GlobalAveragePooling2D()(layers.ReLU()(normalised)))
    model = keras.Model(inputs, [tapped, head])
    for weight in model.layers[3].weights:
        weight.assign(np.random.default_rng(0).uniform(0.5, 1.5, weight.shape).astype("float32"))
    pruned = prune_regular_graph(model, graph=graph16, layers=[model.layers[2].name])
    stripped = strip_pruning(pruned)
    compact, compacted, _ = compact_model(stripped, layout="scatter")
    assert list(compacted) == [model.layers[2].name]
    assert not any(isinstance(layer, FoldedAway) for layer in compact.layers)
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 32)).astype("float32")
    for got, want in zip(compact(x), pruned(x)):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=1e-4)


def test_compact_model_rejects_an_unknown_layout(graph16):
    stripped = strip_pruning(prune_regular_graph(vgg((32, 48, 64)), graph=graph16))
    with pytest.raises(ValueError, match=r"`layout` must be one of \('auto', 'measured', 'gather', 'slices', "
                                         r"'scatter'\), got 'dense'"):
        compact_model(stripped, layout="dense")


def test_measured_layouts_are_timed_once_and_the_fastest_is_written(graph16, tmp_path, monkeypatch):
    import json

    from rgp_keras.plan.latency import LatencyTable

    pruned = prune_regular_graph(vgg((32, 48, 64)), graph=graph16)
    table = LatencyTable(tmp_path / "table.json")
    report = export_tflite(pruned, tmp_path / "a.tflite", layout="measured", latency_table=table)
    entries = {key: ms for key, ms in json.loads((tmp_path / "table.json").read_text())["entries"].items()
               if key.startswith('["layer alone"')}
    masked = [layer.name for layer in strip_pruning(pruned).layers if hasattr(layer, "kernel")
              and np.any(to_numpy(layer.kernel) == 0)]
    timed = {json.loads(key)[-1] for key in entries}
    assert len(masked) >= 3 and {"dense", "gather", "slices"} <= timed and len(entries) >= 3 * len(masked)
    assert set(report.compacted) <= set(masked)

    # nothing is timed again, and the choice follows the table: make "slices" the fastest everywhere...
    monkeypatch.setattr(LatencyTable, "_time", lambda *args, **kwargs: pytest.fail("timed again"))
    for key in entries:
        table.entries[key] = table.call_ms + (0.001 if json.loads(key)[-1] == "slices" else 1.0)
    report = export_tflite(pruned, tmp_path / "b.tflite", layout="measured", latency_table=table)
    assert report.compacted == {name: "slices" for name in masked}
    # ... then dense: every layer stays dense-shaped, and the report says what was measured
    for key in entries:
        table.entries[key] = table.call_ms + (0.001 if json.loads(key)[-1] == "dense" else 1.0)
    report = export_tflite(pruned, tmp_path / "c.tflite", layout="measured", latency_table=table)
    assert report.compacted == {} and all("measured 1000.00x the dense layer's latency alone" in why
                                          for why in report.not_compacted.values())


def test_measured_layouts_say_what_they_need(graph16, tmp_path):
    pruned = prune_regular_graph(vgg((32, 48, 64)), graph=graph16)
    with pytest.raises(ValueError, match='layout="measured" times float files; for quantize="int8" use layout="auto"'):
        export_tflite(pruned, tmp_path / "a.tflite", layout="measured", quantize="int8",
                      representative_data=np.zeros((4, 32, 32, 3), "float32"))
    with pytest.raises(ValueError, match=r'`latency_table` holds the layer times of layout="measured", got '
                                         r"layout='auto'"):
        export_tflite(pruned, tmp_path / "a.tflite", latency_table=tmp_path / "table.json")
    with pytest.raises(ValueError, match="no latency table at"):
        export_tflite(pruned, tmp_path / "a.tflite", layout="measured", latency_table=tmp_path / "none.json")
    assert not list(tmp_path.iterdir())


def test_a_board_times_the_compact_layouts_that_an_export_elsewhere_chooses_by(graph16, tmp_path, monkeypatch,
                                                                                capsys):
    import json

    from rgp_keras.cli import main
    from rgp_keras.plan.latency import LatencyTable

    pruned = prune_regular_graph(vgg((32, 48, 64)), graph=graph16)
    pruned.save(tmp_path / "pruned.keras")
    board = tmp_path / "board.json"
    # on the board: `rgp bench-layers pruned.keras` times each masked layer's layouts and its dense form
    monkeypatch.setattr(LatencyTable, "_time", lambda self, models, bar, rounds=3, ratios=False: [1.0] * len(models))
    assert main(["bench-layers", str(tmp_path / "pruned.keras"), "-o", str(board), "--threads", "2"]) == 0
    assert "--layout measured --table" in capsys.readouterr().out
    stored = json.loads(board.read_text())
    masked = [layer.name for layer in strip_pruning(pruned).layers if hasattr(layer, "kernel")
              and np.any(to_numpy(layer.kernel) == 0)]
    alone = [key for key in stored["entries"] if key.startswith('["layer alone"')]
    assert len(masked) >= 3 and len(alone) >= 3 * len(masked)
    # ... where slices run fastest; back here, the export reads the board's table and times nothing
    stored["machine"] = {"litert": "ai-edge-litert 2.3.0", "cpu": "Cortex-A76"}
    for key in alone:
        stored["entries"][key] = stored["entries"]["invoke"] + (0.001 if json.loads(key)[-1] == "slices" else 1.0)
    board.write_text(json.dumps(stored))
    monkeypatch.setattr(LatencyTable, "_time", lambda *args, **kwargs: pytest.fail("timed here"))
    out = tmp_path / "model.tflite"
    assert main(["export", str(tmp_path / "pruned.keras"), "-o", str(out), "--layout", "measured", "--table",
                 str(board), "--threads", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["compacted"] == {name: "slices" for name in masked}
    # a model the board did not time, and a table without the measured layout: one line each, no file
    other = prune_regular_graph(vgg((32, 48, 80)), graph=graph16)
    other.save(tmp_path / "other.keras")
    assert main(["export", str(tmp_path / "other.keras"), "-o", str(tmp_path / "o.tflite"), "--layout", "measured",
                 "--table", str(board), "--threads", "2"]) == 2
    assert "measured on {'litert': 'ai-edge-litert 2.3.0', 'cpu': 'Cortex-A76'}" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "other.keras"), "-o", str(tmp_path / "o.tflite"), "--table",
                 str(board)]) == 2
    assert '--table holds the layer times of layout="measured"' in capsys.readouterr().err
    assert not (tmp_path / "o.tflite").exists()


@pytest.mark.slow
def test_mobilenet_v2_compact_export_matches_keras(real_images, tmp_path):
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    pruned = prune_regular_graph(model, degree=2, nodes=16, seed=0)
    expected = to_numpy(pruned(real_images[:16]))
    report = export_tflite(strip_pruning(pruned), tmp_path / "mobilenet.tflite")
    assert len(report.compacted) > 10 and report.macs < 0.6 * report.dense_macs
    np.testing.assert_allclose(run_tflite(report.path, real_images[:16]), expected, atol=1e-4, rtol=0)


def test_int8_compact_classifies_like_int8_sparse(graph16, tmp_path):
    (x_train, y_train), (x_test, _) = load_fashion_mnist()
    x_train = np.pad(x_train[:2048], ((0, 0), (2, 2), (2, 2)))[..., None].repeat(3, -1).astype("float32") / 255
    x_test = np.pad(x_test[:300], ((0, 0), (2, 2), (2, 2)))[..., None].repeat(3, -1).astype("float32") / 255
    keras.utils.set_random_seed(0)
    pruned = prune_regular_graph(vgg((32, 64, 64)), graph=graph16)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x_train, y_train[:2048], epochs=1, batch_size=128, verbose=0)
    compact = export_tflite(pruned, tmp_path / "c8.tflite", quantize="int8", representative_data=x_train[:200])
    sparse = export_tflite(pruned, tmp_path / "s8.tflite", compact=False, quantize="int8",
                           representative_data=x_train[:200])
    agree = np.mean(run_tflite(compact.path, x_test).argmax(-1) == run_tflite(sparse.path, x_test).argmax(-1))
    assert agree >= 0.98
    assert compact.size_bytes < sparse.size_bytes
    assert set(compact.compacted.values()) == {"gather"}  # int8 partial sums would be slower than int8 dense


def test_layers_that_cannot_be_compacted_stay_and_the_report_says_why(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 64)), layers.Conv2D(64, 3, padding="same"),
                              layers.Conv2DTranspose(64, 3, padding="same"), layers.Conv2D(64, 1),
                              layers.Conv2D(8, 1)])
    pruned = prune_regular_graph(model, degree=8, nodes=64, seed=0, skip_first=False)
    report = export_tflite(pruned, tmp_path / "m.tflite")
    assert "Conv2DTranspose" in report.not_compacted[model.layers[1].name]
    assert "too small" in report.not_compacted[model.layers[0].name]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 64)).astype("float32")
    np.testing.assert_allclose(run_tflite(report.path, x), to_numpy(pruned(x)), atol=1e-4)


def test_int8_needs_representative_data_of_the_input_shape(graph16, tmp_path):
    pruned = prune_regular_graph(vgg((32, 64, 64)), graph=graph16)
    with pytest.raises(ValueError, match=r"needs `representative_data`.*\(N, 32, 32, 3\)"):
        export_tflite(pruned, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match=r"shaped \(N, 32, 32, 3\).*got \(10, 28, 28\)"):
        export_tflite(pruned, tmp_path / "m.tflite", quantize="int8", representative_data=np.zeros((10, 28, 28)))
    with pytest.raises(ValueError, match="quantize.*one of"):
        export_tflite(pruned, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match=r"`layout` must be one of \('auto', 'measured', 'gather', 'slices', "
                                         r"'scatter'\), got 'wide'"):
        export_tflite(pruned, tmp_path / "m.tflite", layout="wide")
    with pytest.raises(ValueError, match="needs compact=True, got layout='scatter'"):
        export_tflite(pruned, tmp_path / "m.tflite", compact=False, layout="scatter")
    assert os.listdir(tmp_path) == []


def test_unwritable_path_leaves_nothing_behind(graph16, tmp_path):
    pruned = prune_regular_graph(vgg((32, 64, 64)), graph=graph16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_tflite(pruned, tmp_path / "missing" / "m.tflite")
    with pytest.raises(ValueError, match=r"must end with \.tflite"):
        export_tflite(pruned, tmp_path / "m.keras")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(PermissionError, match="no write permission"):
            export_tflite(pruned, locked / "m.tflite")
    finally:
        locked.chmod(0o700)
    assert os.listdir(tmp_path) == ["locked"] and os.listdir(locked) == []


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(
    "patched, replacement, error, message",
    [
        ("keras.Model.export", _raise(RuntimeError("converter crashed")), RuntimeError, "converter crashed"),
        ("rgp_keras.export._convert.run_tflite", _raise(RuntimeError("tflite/kernels/conv3d.cc:129 failed")),
         ExportCheckError, "does not run in LiteRT.*conv3d.cc.*Nothing was written.*compact=False"),
        ("rgp_keras.export._convert.run_tflite", lambda *args, **kwargs: run_tflite(*args, **kwargs) + 0.5,
         ExportCheckError, r"differ from the Keras model's by up to 0\.5.*accepted: 0\.001"),
        ("rgp_keras.export._convert.run_tflite", lambda *args, **kwargs: run_tflite(*args, **kwargs) * np.nan,
         ExportCheckError, "non-finite outputs"),
    ],
    ids=["conversion-fails", "litert-cannot-run", "outputs-differ", "outputs-not-finite"],
)
def test_a_failed_export_writes_nothing_and_keeps_an_existing_file(patched, replacement, error, message, graph16,
                                                                   tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous export")
    pruned = prune_regular_graph(vgg((32, 64, 64)), graph=graph16)
    monkeypatch.setattr(patched, replacement)
    with pytest.raises(error, match=message):
        export_tflite(pruned, target)
    assert target.read_bytes() == b"previous export" and os.listdir(tmp_path) == ["m.tflite"]


def test_exported_files_get_the_umask_mode(graph16, tmp_path):
    model = keras.Sequential([keras.Input((32,)), layers.Dense(32), layers.Dense(32), layers.Dense(4)])
    previous = os.umask(0o022)
    try:
        export_tflite(prune_regular_graph(model, graph=graph16), tmp_path / "m.tflite")
    finally:
        os.umask(previous)
    assert (tmp_path / "m.tflite").stat().st_mode & 0o777 == 0o644


def test_stripped_summary_and_export_report_say_the_same_as_the_pruned_model(tmp_path, vgg_model):
    from rgp_keras import pruning_summary

    pruned = prune_regular_graph(vgg_model, degree=8, nodes=32, seed=0)
    stripped = strip_pruning(pruned)
    before, after = pruning_summary(pruned), pruning_summary(stripped)
    assert after.totals == before.totals
    assert [row["graph"] for row in after] == [row["graph"] for row in before]
    assert sum("stripped: zeros in channel-group blocks" in row["skipped"] for row in after) == 3
    report = export_tflite(pruned, tmp_path / "m.tflite")
    for name, reason in report.not_compacted.items():
        assert "kernel MACs per sample all run, 75% of them on zero weights" in reason
    assert report.not_compacted  # 32 groups of 1-2 channels: estimated too slow, and the report says what it costs


def two_in_two_out():
    keras.utils.set_random_seed(0)
    left, right = keras.Input((16,), name="left"), keras.Input((16,), name="right")
    x = keras.layers.Concatenate()([keras.layers.Dense(32)(left), keras.layers.Dense(32)(right)])
    for _ in range(2):
        x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model([left, right], [keras.layers.Dense(4, name="first")(x), keras.layers.Dense(3, name="second")(x)])


@pytest.mark.parametrize("compact", [True, False])
def test_multi_input_multi_output_parity_in_keras_order(tmp_path, compact):
    pruned = prune_regular_graph(two_in_two_out(), degree=4, nodes=16, seed=0)
    path = tmp_path / "m.tflite"
    export_tflite(pruned, path, compact=compact, **({"layout": "gather"} if compact else {}))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(5, 16)).astype("float32") for _ in range(2)]
    want = [to_numpy(y) for y in pruned(x)]
    for inputs in (x, {"left": x[0], "right": x[1]}):
        got = run_tflite(path, inputs, batch_size=2)  # batches of 2 exercise the resizing
        assert [g.shape for g in got] == [(5, 4), (5, 3)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-4)
    with pytest.raises(ValueError, match=r"takes the inputs \['left', 'right'\]; got a dict with keys \['left'\]"):
        run_tflite(path, {"left": x[0]})
    with pytest.raises(ValueError, match="takes 2 inputs .* pass a list in that order or a dict by name"):
        run_tflite(path, x[0])


@pytest.mark.parametrize("layout", ["gather", "scatter"])
def test_variable_length_inputs_export_compact(tmp_path, layout):
    inputs = keras.Input((None, 32))
    x = inputs
    for _ in range(3):
        x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(8)(x))
    pruned = prune_regular_graph(model, degree=4, nodes=16, seed=0)
    report = export_tflite(pruned, tmp_path / "v.tflite", layout=layout)
    assert set(report.compacted.values()) == {layout} and len(report.compacted) == 2
    for length in (5, 9):
        x = np.random.default_rng(length).normal(size=(2, length, 32)).astype("float32")
        np.testing.assert_allclose(run_tflite(tmp_path / "v.tflite", x), to_numpy(pruned(x)), atol=1e-4)


@pytest.mark.parametrize("layout", ["gather", "scatter"])
def test_a_compact_model_saves_and_reloads(tmp_path, vgg_model, layout):
    stripped = strip_pruning(prune_regular_graph(vgg_model, degree=4, nodes=16, seed=0))
    compact, compacted, _ = compact_model(stripped, layout)
    assert compacted and set(compacted.values()) == {layout}
    compact.save(tmp_path / "compact.keras")
    reloaded = keras.saving.load_model(tmp_path / "compact.keras")
    assert [type(layer).__name__ for layer in reloaded.layers] == [type(layer).__name__ for layer in compact.layers]
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(compact(x)), atol=1e-5)


# Every layer type the masks support (and the depthwise one they leave alone), alone in a model of two:
# (input shape, layer factory). Pruned: both layers masked (a depthwise layer sits between two masked 1x1 convs).
LAYER_TYPES = {
    "Dense": ((32,), lambda: layers.Dense(32)),
    "Conv1D": ((8, 32), lambda: layers.Conv1D(32, 3, padding="same")),
    "Conv2D": ((8, 8, 32), lambda: layers.Conv2D(32, 3, padding="same")),
    "dilated Conv2D": ((8, 8, 32), lambda: layers.Conv2D(32, 3, padding="same", dilation_rate=2)),
    "Conv3D": ((4, 4, 4, 32), lambda: layers.Conv3D(32, 3, padding="same")),
    "Conv2DTranspose": ((4, 4, 32), lambda: layers.Conv2DTranspose(32, 3, strides=2, padding="same")),
    "SeparableConv1D": ((8, 32), lambda: layers.SeparableConv1D(32, 3, padding="same")),
    "SeparableConv2D": ((8, 8, 32), lambda: layers.SeparableConv2D(32, 3, padding="same")),
    "DepthwiseConv2D": ((8, 8, 32), lambda: layers.DepthwiseConv2D(3, padding="same")),
}


@pytest.mark.parametrize("pruned", [False, True], ids=["plain", "pruned"])
@pytest.mark.parametrize("kind", list(LAYER_TYPES))
def test_every_layer_type_exports_a_file_that_runs_like_keras(kind, pruned, tmp_path):
    shape, make = LAYER_TYPES[kind]
    keras.utils.set_random_seed(0)
    if kind == "DepthwiseConv2D":
        model = keras.Sequential([keras.Input(shape), layers.Conv2D(32, 1), make(), layers.Conv2D(32, 1)])
    else:
        model = keras.Sequential([keras.Input(shape), make(), make()])
    randomize_kernels(model)
    if pruned:
        model = prune_regular_graph(model, degree=2, nodes=8, skip_first=False, skip_last=False, seed=0)
    report = export_tflite(model, tmp_path / "m.tflite")
    x = np.random.default_rng(1).normal(size=(3, *shape)).astype("float32")
    expected = to_numpy(model(x))
    np.testing.assert_allclose(run_tflite(report.path, x), expected, atol=1e-5 * max(1, np.abs(expected).max()))
    assert report.max_difference < 1e-4 and report.check_samples > 0
    if pruned:  # every masked layer is compacted or named with the reason it is not
        masked = {layer.layer.name for layer in model.layers if layer.__class__.__name__ == "RegularGraphPruning"}
        assert masked and masked == set(report.compacted) | set(report.not_compacted)
        assert report.format != "dense" or any("sparsity encoding not used" in note for note in report.notes)
    else:
        assert report.format == "dense" and not report.not_compacted


def test_a_pruned_conv3d_stays_dense_shaped_since_litert_conv3d_has_no_groups(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 4, 32)), layers.Conv3D(32, 3, padding="same"),
                              layers.Conv3D(32, 3, padding="same")])
    pruned = prune_regular_graph(model, degree=2, nodes=8, skip_first=False, skip_last=False, seed=0)
    report = export_tflite(pruned, tmp_path / "m.tflite", layout="gather")
    assert not report.compacted and set(report.not_compacted) == {layer.name for layer in model.layers}
    assert all("CONV_3D has no groups" in reason for reason in report.not_compacted.values())


def test_the_report_says_what_format_the_file_holds(graph16, tmp_path):
    dense = vgg((32, 64, 64))
    report = export_tflite(dense, tmp_path / "dense.tflite")
    assert report.format == "dense" and "dense, float32" in str(report) and "compact" not in str(report).split(
        "\n")[1]
    pruned = prune_regular_graph(dense, graph=graph16)
    assert export_tflite(pruned, tmp_path / "c.tflite").format == "compact"
    assert export_tflite(pruned, tmp_path / "s.tflite", compact=False).format == "sparse"
    assert export_tflite(pruned, tmp_path / "q.tflite", compact=False, quantize="dynamic").format == "dense"


def _built(layer, shape):
    layer.build(shape)
    return layer
