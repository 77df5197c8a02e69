"""The width axis: channel spaces (rgp_keras/channels/spaces.py), criteria and prune_channels."""

import itertools
import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import rgp_keras  # noqa: E402
from rgp_keras import prune_channels, pruning_summary  # noqa: E402
from rgp_keras.channels.spaces import channel_spaces  # noqa: E402
from rgp_keras.errors import InputTypeError, InputValueError  # noqa: E402
from rgp_keras.model_walk import to_numpy  # noqa: E402

layers = keras.layers


def branchy(seed=0):
    """A residual Add, BatchNorm, a depthwise conv, a Concatenate, a SeparableConv, Flatten -> Dense: ReLU only,
    so a channel whose filters are zero stays zero all the way."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(name="bn")(x))
    y = layers.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = layers.Add()([x, y])
    z = layers.Conv2D(48, 3, strides=2, padding="same", name="c3")(x)
    z = layers.ReLU()(layers.DepthwiseConv2D(3, padding="same", name="dw")(z))
    z = layers.Concatenate(name="concat")([z, layers.Conv2D(16, 1, strides=2, activation="relu", name="c4")(x)])
    z = layers.SeparableConv2D(40, 3, padding="same", activation="relu", name="sep")(z)
    z = layers.Conv2D(24, 1, activation="relu", name="c5")(z)
    outputs = layers.Dense(5, name="head")(layers.Flatten()(layers.MaxPooling2D(3)(z)))
    return keras.Model(inputs, outputs, name="branchy")


def images(count, shape=(12, 12, 3), seed=0):
    return np.random.default_rng(seed).normal(size=(count, *shape)).astype("float32")


def relative_error(model, other, x):
    want = to_numpy(model(x))
    return float(np.sum((to_numpy(other(x)) - want) ** 2) / np.sum(want**2))


def l1_kept(dense, keep=0.5):
    """The output channels each producer of `branchy` keeps by L1 filter norms (the residual pair's summed)."""
    norms = {}
    for layer in dense.layers:
        kernel = layer.pointwise_kernel if isinstance(layer, layers.SeparableConv2D) else getattr(layer, "kernel", None)
        if kernel is not None and not isinstance(layer, layers.DepthwiseConv2D) and layer.name != "head":
            norms[layer.name] = np.abs(to_numpy(kernel)).reshape(-1, kernel.shape[-1]).sum(axis=0)
    norms["c1"] = norms["c2"] = norms["c1"] + norms["c2"]
    return {name: np.sort(np.argsort(-value, kind="stable")[: round(keep * len(value))])
            for name, value in norms.items()}


def test_the_thin_model_computes_what_the_dense_one_does_with_the_dropped_channels_zeroed():
    model = branchy()
    thin = prune_channels(model, keep=0.5)
    kept = l1_kept(model)
    zeroed = keras.models.clone_model(model)
    zeroed.set_weights(model.get_weights())
    for layer in zeroed.layers:
        if layer.name not in kept:
            continue
        drop = np.setdiff1d(np.arange(layer.bias.shape[0] if layer.use_bias else layer.filters), kept[layer.name])
        attribute = "pointwise_kernel" if isinstance(layer, layers.SeparableConv2D) else "kernel"
        kernel = to_numpy(getattr(layer, attribute)).copy()
        kernel[..., drop] = 0
        getattr(layer, attribute).assign(kernel)
        if layer.use_bias:
            bias = to_numpy(layer.bias).copy()
            bias[drop] = 0
            layer.bias.assign(bias)
    bn = next(layer for layer in zeroed.layers if isinstance(layer, layers.BatchNormalization))
    drop = np.setdiff1d(np.arange(32), kept["c1"])
    for variable in (bn.gamma, bn.beta):
        value = to_numpy(variable).copy()
        value[drop] = 0
        variable.assign(value)
    x = images(16)
    np.testing.assert_allclose(to_numpy(thin(x)), to_numpy(zeroed(x)), rtol=1e-4, atol=1e-5)


def test_coupled_channels_are_kept_together_and_inputs_and_outputs_keep_theirs():
    model = branchy()
    thin = prune_channels(model, keep=0.5)
    by_name = {layer.name: layer for layer in thin.layers}
    assert [by_name[name].filters for name in ("c1", "c2", "c3", "c4")] == [16, 16, 24, 8]
    np.testing.assert_array_equal(  # the residual Add's second producer keeps the channels the first keeps
        to_numpy(by_name["c2"].bias), to_numpy(model.get_layer("c2").bias)[l1_kept(model)["c1"]])
    by_name = {layer.name: layer for layer in thin.layers}
    assert by_name["concat"].output.shape[-1] == 32  # 24 + 8, the index maps of both inputs
    assert by_name["head"].units == 5 and thin.input.shape == model.input.shape
    assert by_name["head"].kernel.shape[0] == 4 * 12  # Flatten of 2x2 positions x 12 channels


def test_channel_spaces_name_why_they_keep_their_channels():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3)(inputs)
    x = layers.Lambda(lambda t: t * 2.0)(x)  # a layer the walk cannot follow
    x = layers.Conv2D(16, 3)(x)
    x = x + 1.0  # an element-wise op on a number: followed
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(layers.Conv2D(8, 1)(x)))
    spaces = channel_spaces(keras.Model(inputs, outputs))
    reasons = {spaces.frozen(root) for root in spaces.spaces()}
    assert any(reason and "Lambda" in reason and "cannot follow" in reason for reason in reasons)
    free = [root for root in spaces.spaces() if not spaces.frozen(root)]
    assert [spaces.width(root) for root in free] == [16, 8]


def test_summary_shows_widths_costs_before_and_after_and_the_criterion():
    model = branchy()
    thin = prune_channels(model, keep=0.5)
    summary = pruning_summary(thin)
    dense = pruning_summary(model).totals
    totals = summary.totals
    assert totals["params"] == dense["params"] and totals["macs"] == dense["macs"]
    assert totals["kept_params"] == thin.count_params() < 0.5 * dense["params"]
    rows = {row["name"]: row for row in summary}
    assert rows["c2"]["width"] == "in 32 -> 16, out 32 -> 16"
    assert rows["head"]["skipped"] == "width kept: a model output"
    assert summary.criteria == ["L1 filter norms (no calibration data)"]
    assert "channels chosen by L1 filter norms" in str(summary) and "32 -> 16" in str(summary)


def test_data_aware_channels_and_refit_reproduce_the_dense_model_better_than_l1():
    model = branchy()
    x, held_out = images(256), images(64, seed=1)
    l1 = prune_channels(model, keep=0.5)
    fitted = prune_channels(model, keep=0.5, calibration_data=x, verbose=0)
    assert relative_error(model, fitted, held_out) < 0.5 * relative_error(model, l1, held_out)
    rows = {row["name"]: row for row in pruning_summary(fitted)}
    assert rows["c2"]["data_aware"]["error_after"] < rows["c2"]["data_aware"]["error_before"]
    assert "least squares" in pruning_summary(fitted).criteria[0]


def test_the_least_squares_criterion_keeps_the_channels_a_refit_needs():
    # a Dense layer reading 32 channels, 16 of which copy others: least squares loses nothing without the copies
    # (a ReLU after them: a linear space would be turned to its principal basis first, `basis`)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    hidden = layers.Dense(32, activation="relu")
    outputs = layers.Dense(4)(hidden(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.random.default_rng(0).normal(size=(16, 32)).astype("float32")
    kernel[:, 16:] = 3.0 * kernel[:, :16]  # the larger copies: L1 keeps those
    hidden.set_weights([kernel, np.zeros(32, "float32")])
    x = images(512, (16,))
    fitted = prune_channels(model, keep=0.5, calibration_data=x, calibration_mixes=0)
    assert relative_error(model, fitted, images(64, (16,), seed=1)) < 1e-6


def bottleneck(seed=0):
    """A linear residual stream of 8 channels (a 1x1 conv with bias and BatchNormalization, a 3x3 conv, their sum,
    zero padding), read by a 3x3 conv and, after a Flatten, by a Dense layer; a ReLU space after it."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 8))
    a = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 1, name="p1")(inputs))
    b = layers.Conv2D(8, 3, padding="same", use_bias=False, name="p2")(inputs)
    stream = layers.ZeroPadding2D(1)(layers.Add()([a, b]))
    x = layers.Conv2D(6, 3, activation="relu", name="reader")(stream)
    y = layers.Dense(6, name="flat_reader")(layers.Flatten()(stream))
    outputs = layers.Dense(3, name="head")(layers.Concatenate()([layers.Flatten()(x), y]))
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    return model


def test_a_linear_bottleneck_is_turned_to_another_basis_without_changing_the_function():
    from rgp_keras.channels.basis import linear_spaces, principal_basis
    from rgp_keras.data_aware.calibration import Calibration

    model = bottleneck()
    spaces = channel_spaces(model)
    free = [root for root in spaces.spaces() if spaces.producers(root) and not spaces.frozen(root)]
    linear = linear_spaces(spaces, free)
    # the stream, and the linear Dense's space read through the Concatenate; not the ReLU space of `reader`
    assert len(linear) == 2
    space = next(space for space in linear.values() if len(space.producers) == 2)
    assert sorted(call.layer.name for call, _ in space.producers) == ["p1", "p2"]
    assert sorted(call.layer.name for call in space.readers) == ["flat_reader", "reader"]
    x = images(64, (6, 6, 8))
    turned, roots = principal_basis(model, spaces, free, Calibration(x, [(None, 6, 6, 8)], ["x"], batch_size=16))
    assert roots == list(linear)
    assert not np.allclose(to_numpy(turned.get_layer("p2").kernel), to_numpy(model.get_layer("p2").kernel))
    held_out = images(16, (6, 6, 8), seed=1)
    np.testing.assert_allclose(to_numpy(turned(held_out)), to_numpy(model(held_out)), rtol=1e-4, atol=1e-4)


def test_linear_spaces_read_together_or_in_a_chain_are_each_turned_and_the_function_kept():
    from rgp_keras.channels.basis import principal_basis
    from rgp_keras.data_aware.calibration import Calibration

    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    a, b = layers.Dense(6, name="a")(inputs), layers.Dense(5, name="b")(inputs)
    both = layers.Dense(7, name="both")(layers.Concatenate()([a, b]))  # reads two linear spaces, writes a third
    model = keras.Model(inputs, layers.Dense(3)(layers.Dense(4, activation="relu")(both)))
    spaces = channel_spaces(model)
    free = [root for root in spaces.spaces() if spaces.producers(root) and not spaces.frozen(root)]
    x = images(256, (10,))
    turned, roots = principal_basis(model, spaces, free, Calibration(x, [(None, 10)], ["x"], batch_size=64))
    assert len(roots) == 3
    held_out = images(32, (10,), seed=1)
    np.testing.assert_allclose(to_numpy(turned(held_out)), to_numpy(model(held_out)), rtol=1e-4, atol=1e-4)


def test_a_linear_stream_keeps_the_directions_its_readers_need_which_no_channel_subset_holds():
    # a stream of 8 independent channels whose reader needs only 4 directions, spread over all 8 channels:
    # 4 channels turned to those directions lose nothing, no 4 of the 8 channels can do it
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    stream = layers.Add()([layers.Dense(8, name="p1")(inputs), layers.Dense(8, name="p2")(inputs)])
    reader = layers.Dense(6, activation="relu", name="reader")
    model = keras.Model(inputs, layers.Dense(3)(reader(stream)))
    rng = np.random.default_rng(0)
    reader.set_weights([(rng.normal(size=(8, 4)) @ rng.normal(size=(4, 6))).astype("float32"), np.zeros(6, "float32")])
    x, held_out = images(512, (8,)), images(128, (8,), seed=1)
    thin = prune_channels(model, keep=0.5, layers=["p1", "p2"], calibration_data=x, calibration_mixes=0, verbose=0)
    assert thin.get_layer("p1").units == 4
    assert relative_error(model, thin, held_out) < 1e-4
    assert "1 linear bottleneck space(s) first turned" in pruning_summary(thin).criteria[0]
    s = to_numpy(keras.Model(inputs, stream)(x)).astype(np.float64)
    need = s @ to_numpy(reader.kernel)
    subsets = [np.linalg.lstsq(np.c_[s[:, list(kept)], np.ones(len(s))], need, rcond=None)[1].sum() / np.sum(need**2)
               for kept in itertools.combinations(range(8), 4)]
    assert min(subsets) > 0.01


def test_layers_selects_which_layers_lose_output_channels():
    model = branchy()
    thin = prune_channels(model, keep=0.5, layers=["c3", layers.SeparableConv2D])
    widths = {layer.name: getattr(layer, "filters", None) for layer in thin.layers}
    assert (widths["c3"], widths["sep"], widths["c1"], widths["c4"], widths["c5"]) == (24, 20, 32, 16, 24)
    rows = {row["name"]: row for row in pruning_summary(thin)}
    assert rows["c1"]["skipped"] == "width kept: not selected by `layers` (c1, c2)"
    with pytest.raises(InputValueError, match=r"No layer named \['c9'\]"):
        prune_channels(model, keep=0.5, layers="c9")


def test_a_macs_target_is_met_and_the_unreachable_one_names_the_smallest():
    model = branchy()
    dense = pruning_summary(model).totals["macs"]
    thin = prune_channels(model, macs=0.3)
    kept = pruning_summary(thin).totals["kept_macs"] / dense
    assert 0.25 <= kept <= 0.3
    with pytest.raises(InputValueError, match=r"`macs` 0.001 is below what this model can reach.*macs >= 0\.0"):
        prune_channels(model, macs=0.001)


def test_a_macs_target_with_data_spends_it_where_channels_matter_and_names_the_plan_chosen():
    # the first hidden space holds 16 copies (least squares loses nothing without them), the second does not:
    # per-space widths keep more of the second than one width for all, at the same MACs
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    hidden = layers.Dense(32, activation="relu")
    outputs = layers.Dense(4)(layers.Dense(32, activation="relu")(hidden(inputs)))
    model = keras.Model(inputs, outputs)
    kernel = np.random.default_rng(0).normal(size=(16, 32)).astype("float32")
    kernel[:, 16:] = 3.0 * kernel[:, :16]
    hidden.set_weights([kernel, np.zeros(32, "float32")])
    x, held_out = images(512, (16,)), images(128, (16,), seed=1)
    thin = prune_channels(model, macs=0.4, calibration_data=x, calibration_mixes=0, verbose=0)
    uniform = prune_channels(model, keep=17 / 32, calibration_data=x, calibration_mixes=0, verbose=0)
    assert [layer.units for layer in uniform.layers[1:3]] == [17, 17]  # one width for all at macs=0.4
    summary = pruning_summary(thin)
    assert summary.totals["kept_macs"] <= 0.4 * pruning_summary(model).totals["macs"]
    assert thin.layers[2].units > 17
    assert relative_error(model, thin, held_out) < 0.75 * relative_error(model, uniform, held_out)
    assert re.search(r"widths per space for macs=0\.4: (least summed error|halfway) \(the least relative output "
                     r"error .*one width for all [0-9.]+", summary.criteria[0])


def test_the_thin_model_saves_reloads_without_custom_objects_and_exports(tmp_path):
    model = branchy()
    thin = prune_channels(model, keep=0.5)
    thin.save(tmp_path / "thin.keras")
    reloaded = keras.saving.load_model(tmp_path / "thin.keras")
    x = images(4)
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(thin(x)), atol=1e-6)
    report = rgp_keras.export_tflite(thin, tmp_path / "thin.tflite")
    assert report.params == thin.count_params() and report.dense_params == model.count_params()
    assert report.max_difference < 1e-4


def test_a_model_with_keras_ops_is_thinned_through_them_and_exports(tmp_path):
    # MobileNetV3's hard-swish is `x * relu6(x + 3) / 6` in keras.ops: followed, and the export takes it
    # (every thinned keras.applications model of the slow test below exports too: 19-51 s each, checked once)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same")(inputs)
    x = x * keras.ops.relu6(x + 3.0) / 6.0
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(layers.Conv2D(16, 1)(x)))
    model = keras.Model(inputs, outputs)
    thin = prune_channels(model, keep=0.5)
    assert [layer.filters for layer in thin.layers if isinstance(layer, layers.Conv2D)] == [8, 8]
    report = rgp_keras.export_tflite(thin, tmp_path / "thin.tflite")
    assert report.max_difference < 1e-4


def test_it_composes_with_regular_graph_pruning_and_both_reductions_are_counted():
    model = branchy()
    x = images(64)
    thin = prune_channels(model, keep=0.7, calibration_data=x, verbose=0)
    both = rgp_keras.prune_regular_graph(thin, sparsity=0.5, nodes=4, calibration_data=x, verbose=0)
    totals = pruning_summary(both).totals
    assert totals["params"] == model.count_params()
    assert totals["kept_params"] < pruning_summary(thin).totals["kept_params"]
    assert np.isfinite(to_numpy(both(x[:2]))).all()


def test_the_users_model_is_untouched():
    model = branchy()
    before = [w.copy() for w in model.get_weights()]
    prune_channels(model, keep=0.5, calibration_data=images(32), verbose=0)
    with pytest.raises(InputValueError):
        prune_channels(model, keep=0.5, calibration_data=images(32, (12, 12, 4)))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize(
    "options, error, words",
    [
        (dict(keep=0.0), InputValueError, "`keep` must be in (0, 1]"),
        (dict(keep=1.5), InputValueError, "`keep` must be in (0, 1]"),
        (dict(keep="half"), InputTypeError, "`keep` must be a number in (0, 1]"),
        (dict(keep=True), InputTypeError, "`keep` must be a number in (0, 1]"),
        (dict(macs=-0.1), InputValueError, "`macs` must be in (0, 1]"),
        (dict(keep=0.5, macs=0.5), InputValueError, "exactly one of `keep`"),
        (dict(), InputValueError, "exactly one of `keep`"),
        (dict(keep=0.5, calibration_samples=8), InputValueError, "`calibration_samples` needs `calibration_data`"),
    ],
)
def test_bad_amounts_say_what_is_accepted(options, error, words):
    with pytest.raises(error) as raised:
        prune_channels(branchy(), **options)
    assert words in str(raised.value)


@pytest.mark.parametrize(
    "data, words",
    [
        (np.zeros((8, 12, 12, 4), "float32"), "12, 12, 3)"),
        (np.zeros((0, 12, 12, 3), "float32"), "no samples"),
        (np.full((8, 12, 12, 3), np.nan, "float32"), "NaN"),
        (np.array([["a"] * 3] * 8), "numeric arrays (float or int) are accepted"),
    ],
)
def test_bad_calibration_data_is_refused(data, words):
    with pytest.raises((InputValueError, InputTypeError)) as raised:
        prune_channels(branchy(), keep=0.5, calibration_data=data)
    assert "calibration" in str(raised.value).lower() and words in str(raised.value)


def test_models_it_cannot_walk_get_a_clear_error():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 3), "float32"))
    with pytest.raises(InputTypeError, match="subclassed model: prune_channels needs a functional or Sequential"):
        prune_channels(subclassed, keep=0.5)
    with pytest.raises(InputValueError, match="is not built"):
        prune_channels(keras.Sequential([layers.Dense(8), layers.Dense(2)]), keep=0.5)
    frozen = branchy()
    for layer in frozen.layers:
        layer.trainable = False
    with pytest.raises(InputValueError, match=r"no channel space prune_channels may thin: .*not trainable"):
        prune_channels(frozen, keep=0.5)


def test_a_tf_keras_model_is_sent_to_the_keras_3_route():
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(8), tf_keras.layers.Dense(2)])
    with pytest.raises(InputTypeError, match=r"tf_keras \(Keras 2\) model, and prune_channels takes Keras 3 models"):
        prune_channels(model, keep=0.5)


def conv1d_residual():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 4))
    x = layers.Conv1D(24, 3, padding="same", activation="relu")(inputs)
    for _ in range(2):
        y = layers.Conv1D(48, 1, activation="relu")(x)
        y = layers.Conv1D(24, 3, padding="same")(layers.LayerNormalization()(y))
        x = layers.Add()([x, y])
    return keras.Model(inputs, layers.Dense(3)(layers.GlobalMaxPooling1D()(x)))


def nested():
    keras.utils.set_random_seed(0)
    block = keras.Sequential([keras.Input((8, 8, 16)),
                              layers.Conv2D(16, 3, padding="same", activation="relu", name="in_block")], name="block")
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="before_block")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(block(x))
    return keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))


APPLICATIONS = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50", "DenseNet121", "ConvNeXtTiny")


@pytest.mark.parametrize("build", [conv1d_residual, nested], ids=["conv1d_residual", "nested"])
def test_small_architectures_keep_their_function_at_keep_1_and_thin_at_half(build):
    model = build()
    x = images(4, tuple(model.input.shape[1:]))
    np.testing.assert_allclose(to_numpy(prune_channels(model, keep=1.0)(x)), to_numpy(model(x)), atol=1e-5)
    thin = prune_channels(model, keep=0.5, calibration_data=images(32, tuple(model.input.shape[1:])), verbose=0)
    assert thin.count_params() < model.count_params() and np.isfinite(to_numpy(thin(x))).all()
    if build is nested:  # walked into: its layer is thinner, and so are the layers on either side
        rows = {row["name"]: row for row in pruning_summary(thin)}
        assert rows["in_block"]["width"] == "in 16 -> 8, out 16 -> 8"
        assert rows["before_block"]["width"] == "out 16 -> 8" and thin.get_layer("block").output.shape[-1] == 8


@pytest.mark.slow
@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_applications_keep_their_function_at_keep_1_and_thin_at_half(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    x = images(2, (32, 32, 3))
    want = to_numpy(model(x))
    np.testing.assert_allclose(to_numpy(prune_channels(model, keep=1.0)(x)), want, atol=1e-5)
    thin = prune_channels(model, keep=0.5)
    assert thin.count_params() < 0.6 * model.count_params()
    assert to_numpy(thin(x)).shape == want.shape


@pytest.mark.slow
@pytest.mark.parametrize("name", ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0"))
def test_the_linear_bottlenecks_of_keras_applications_are_turned_without_changing_their_function(name):
    from rgp_keras.channels.basis import principal_basis
    from rgp_keras.data_aware.calibration import Calibration

    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    spaces = channel_spaces(model)
    free = [root for root in spaces.spaces() if spaces.producers(root) and not spaces.frozen(root)]
    calibration = Calibration(images(8, (32, 32, 3)), [(None, 32, 32, 3)], [model.input.name], batch_size=8)
    turned, roots = principal_basis(model, spaces, free, calibration)
    assert len(roots) >= 5  # a stream per stage at least
    x = images(2, (32, 32, 3), seed=1)
    want = to_numpy(model(x))
    np.testing.assert_allclose(to_numpy(turned(x)), want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
