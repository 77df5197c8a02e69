"""prune_for_latency: per channel space the width that meets a latency target at the least calibration error.

Segment times come from a stand-in for LiteRT here (a fixed cost per file call plus one per MAC), so the
search is tested exactly and fast; real timings are predict_latency's tests and benchmarks/latency_planner.py."""

import json
import types

import keras
import numpy as np
import pytest

from rgp_keras import LatencyPlan, prune_for_latency, prune_regular_graph, pruning_summary, strip_pruning
from rgp_keras.channels.widths import NO_MASKS, PLANS, WidthSearch, candidate_counts, charged_counts
from rgp_keras.masking.selection import layer_macs
from rgp_keras.plan.latency import LatencyTable, predict_latency
from rgp_keras.plan.search import CHANNEL_TILE, _graphs, _LatencyModel, time_plan_segments

layers = keras.layers


@pytest.fixture(autouse=True)
def mac_timed(monkeypatch):
    """Segments "timed" as 1 ms per million MACs (a masked layer's: the kept share) + 0.01 ms per file call,
    without converting anything."""

    def macs(layer):
        if hasattr(layer, "density"):
            return layer_macs(layer, layer.layer)[0] * float(layer.density)
        return layer_macs(layer, layer)[0] or 0

    def time(self, models, bar, rounds=3, ratios=False):
        times = [0.01 + 1e-6 * sum(macs(layer) for layer in model.layers) for model in models]
        return [ms / times[-1] for ms in times] if ratios else times

    monkeypatch.setattr(LatencyTable, "_time", time)


def residual():
    keras.utils.set_random_seed(0)  # the plan chosen depends on the weights: one model, not a new one each run
    inputs = keras.Input((12, 12, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(inputs)))
    y = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.Add()([x, y])
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(layers.MaxPooling2D()(x))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling2D()(x)))


def duplicated():
    """The first convolution's last 8 filters repeat its first 8: half its channels can go for free."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 10, 3)), layers.Conv2D(16, 3, activation="relu"),
                              layers.Conv2D(16, 3, activation="relu"), layers.GlobalAveragePooling2D(),
                              layers.Dense(32)])
    kernel, bias = model.layers[0].get_weights()
    kernel[..., 8:], bias[8:] = kernel[..., :8], bias[:8]
    model.layers[0].set_weights([kernel, bias])
    return model


def block_sparse():
    """Its second convolution's kernel is already zero outside the blocks of the planner's 4/2 graph: masking
    it loses nothing, while any channel dropped costs accuracy."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 64))
    x = layers.Conv2D(128, 1, activation="relu")(inputs)
    model = keras.Model(inputs, layers.Conv2D(64, 1)(x))
    masked = prune_regular_graph(model, graph=_graphs()[0], layers=[model.layers[2].name], assign_channels=False)
    model.set_weights(strip_pruning(masked).get_weights())
    return model


def images(shape, count=128):
    return np.random.default_rng(0).normal(size=(count, *shape)).astype("float32")


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_the_plan_meets_the_target_and_residual_producers_share_their_width(tmp_path, target):
    model = residual()
    pruned, plan = prune_for_latency(model, target, calibration_data=images((12, 12, 3)), cache_dir=tmp_path,
                                     verbose=0)
    assert isinstance(plan, LatencyPlan) and plan.dense_ms == pytest.approx(predict_latency(model, cache_dir=tmp_path,
                                                                                            verbose=0).total_ms)
    assert abs(plan.predicted_ms / plan.dense_ms - target) <= 0.05 * target
    assert predict_latency(pruned, cache_dir=tmp_path, verbose=0).total_ms == pytest.approx(plan.predicted_ms)
    convs = [layer for layer in pruned.layers if isinstance(layer, layers.Conv2D)]
    assert convs[0].filters == convs[1].filters < 16  # joined by the Add
    assert pruned.output_shape == model.output_shape and len(plan.rows) == 5
    assert plan.rows[-1]["kept_width"] == "a model output"
    text = str(plan)
    assert "sensitivity" in text and f"target {target}" in text and f"{plan.predicted_ms:.3f} ms" in text
    summary = str(pruning_summary(pruned))
    assert "planned" in summary and "channels chosen by prune_for_latency" in summary


def test_whole_plans_are_judged_by_the_output_error_on_the_samples_and_the_nearest_is_returned(tmp_path):
    model, x = residual(), images((12, 12, 3))
    pruned, plan = prune_for_latency(model, 0.4, calibration_data=x, cache_dir=tmp_path, verbose=0)
    names = [row["plan"] for row in plan.candidates]  # three different plans on this model, and tiled ones
    assert names[:3] == list(PLANS) and all(name.endswith(f", {CHANNEL_TILE}-channel tiles") for name in names[3:])
    for row in plan.candidates[:3]:  # each corrected to the budget (whole tiles are coarser: as near as they get)
        assert abs(row["predicted"] - 0.4) <= 0.05 * 0.4
    assert all(row["output_error"] > 0 for row in plan.candidates)
    (chosen,) = [row for row in plan.candidates if row["chosen"]]
    fair = [row for row in plan.candidates if row["predicted"] <= 0.4 * 1.03]  # a slower plan would win by it
    assert chosen["output_error"] == min(row["output_error"] for row in fair)
    assert plan.predicted_ms / plan.dense_ms == pytest.approx(chosen["predicted"])
    dense, thin = model.predict(x, verbose=0), pruned.predict(x, verbose=0)
    assert np.sum((thin - dense) ** 2) / np.sum(dense**2) == pytest.approx(chosen["output_error"], rel=1e-3)
    assert f"* {chosen['plan']}: {chosen['predicted']:.3f} x dense" in str(plan)


def test_tiles_charge_a_count_as_the_next_multiple_up_to_the_width():
    spaces = types.SimpleNamespace(width={"a": 128, "b": 24, "c": 12}.get)
    assert charged_counts(spaces, {"a": 65, "b": 20}, None) == {"a": 65, "b": 20}  # no tile: as given
    assert charged_counts(spaces, {"a": 65, "b": 20, "c": 10}, 16) == {"a": 80, "b": 24, "c": 10}


def test_on_tiles_a_search_steps_tile_by_tile_and_reads_a_timed_width_as_the_tiles_it_ran_on():
    assert candidate_counts(64) == [8, 12, 16, 24, 32, 40, 48, 56, 64]  # the fractions of CANDIDATE_WIDTHS
    assert candidate_counts(64, 16) == [8, 12, 16, 32, 48, 64]
    assert candidate_counts(256, 16) == [32, *range(48, 257, 16)]  # no fewer than the fewest fraction keeps
    assert candidate_counts(24, 16) == [3, 4, 6, 9, 12, 15, 16, 24]
    latency = _LatencyModel.__new__(_LatencyModel)
    latency.spaces = types.SimpleNamespace(width={"a": 64}.get)
    latency.sides = [(None, "out", False)]
    latency.share = lambda index, counts: counts["a"] / 64
    latency.timed = [({"a": 64}, [4.0]), ({"a": 40}, [3.0]), ({"a": 24}, [2.0]), ({"a": 8}, [1.0])]
    latency.curves = latency._curves()
    assert latency.cost(0, {"a": 48}) == pytest.approx(10 / 3)  # between 40 and 64 channels as timed
    tiled = latency.on_tiles(16)  # 40 channels ran as 48, 24 as 32
    assert tiled.cost(0, {"a": 48}) == 3.0 and tiled.cost(0, {"a": 40}) == 3.0 and tiled.cost(0, {"a": 32}) == 2.0
    assert latency.cost(0, {"a": 48}) == pytest.approx(10 / 3)  # the cost model it came from is unchanged


def test_a_scaled_plan_with_fill_spends_what_its_scale_left_of_the_budget_where_it_removes_most_error():
    spaces = types.SimpleNamespace(width=lambda root: 64)

    class Tiled:  # each space's kept share, charged on whole 16-channel tiles
        fixed, tile, roots, affected = 0.0, 16, [{"a"}, {"b"}], {"a": [0], "b": [1]}

        def cost(self, index, counts):
            return charged_counts(spaces, counts, self.tile)["ab"[index]] / 64

    curves = {"a": np.linspace(0, 2, 57), "b": np.linspace(0, 1, 57)}  # "a" loses more per channel removed
    options = dict(shape={"a": 1.0, "b": 1.0})
    scaled = WidthSearch(spaces, ["a", "b"], curves, Tiled(), NO_MASKS, 1.3, **options)
    assert scaled.counts == {"a": 32, "b": 32} and sum(scaled.term_costs) == 1.0  # 33 channels would cost 48
    filled = WidthSearch(spaces, ["a", "b"], curves, Tiled(), NO_MASKS, 1.3, fill=True, **options)
    assert filled.counts == {"a": 48, "b": 32} and sum(filled.term_costs) == 1.25
    assert filled.error < scaled.error


def test_free_channels_go_first_and_a_channel_that_costs_accuracy_only_when_needed():
    model = duplicated()
    x = images((10, 10, 3))
    pruned, plan = prune_for_latency(model, 0.6, calibration_data=x, latency_table=LatencyTable(), verbose=0)
    # each copy costs ~0.001 (the damping of X^T X), the first original ~0.035
    assert 8 <= pruned.layers[0].filters < 16 and plan.rows[0]["sensitivity"] < 0.01
    dense, thin = model.predict(x, verbose=0), pruned.predict(x, verbose=0)
    assert np.abs(thin - dense).max() <= 0.1 * np.abs(dense).max()


def test_a_layer_rgp_masks_for_free_is_masked_and_the_plan_says_so(tmp_path):
    model = block_sparse()
    x = images((8, 8, 64))
    pruned, plan = prune_for_latency(model, 0.8, calibration_data=x, cache_dir=tmp_path, verbose=0)
    assert [row["graph"] for row in plan.rows] == ["dense", "4/2"] and plan.rows[0]["width"] == "128"
    assert type(pruned.layers[-1]).__name__ == "RegularGraphPruning"
    assert predict_latency(pruned, cache_dir=tmp_path, verbose=0).total_ms == pytest.approx(plan.predicted_ms)
    dense, thin = model.predict(x, verbose=0), pruned.predict(x, verbose=0)
    assert np.abs(thin - dense).max() <= 1e-4 * np.abs(dense).max()
    summary = pruning_summary(pruned)  # thinned and masked, refit in one pass
    assert summary[-1]["data_aware"]["error_after"] <= 1e-6 and "reconstruction fit on 128 samples" in str(summary)
    assert "4/2" in str(plan) and "planned" in str(summary)


def test_a_table_from_the_target_device_is_read_and_never_extended(tmp_path):
    model = block_sparse()
    local = time_plan_segments(model, table=tmp_path / "table.json")
    stored = json.loads((tmp_path / "table.json").read_text())
    stored["machine"] = {"litert": "ai-edge-litert 2.3.0", "cpu": "Cortex-A76 (the board)"}
    (tmp_path / "board.json").write_text(json.dumps(stored))
    pruned, plan = prune_for_latency(model, 0.8, calibration_data=images((8, 8, 64)),
                                     latency_table=tmp_path / "board.json", verbose=0)
    assert json.loads((tmp_path / "board.json").read_text()) == stored  # nothing measured, nothing written
    assert [row["graph"] for row in plan.rows] == ["dense", "4/2"]
    assert plan.predicted_ms == pytest.approx(predict_latency(pruned, table=local).total_ms)
    with pytest.raises(ValueError, match=r"measured on .*Cortex-A76 .*lacks \d+ segment\(s\).*rgp bench-layers"):
        prune_for_latency(residual(), 0.5, calibration_data=images((12, 12, 3)), latency_table=tmp_path / "board.json")


@pytest.mark.parametrize(("target", "accepted"), [(0, "(0, 1)"), (1.0, "(0, 1)"), (1.5, "(0, 1)"),
                                                  ("0.3", "a number in (0, 1)"), (True, "a number in (0, 1)")])
def test_a_bad_target_is_refused(target, accepted):
    with pytest.raises((TypeError, ValueError), match="`target`") as error:
        prune_for_latency(residual(), target, calibration_data=images((12, 12, 3)), latency_table=LatencyTable())
    assert accepted in str(error.value)


def test_a_target_below_what_the_model_can_reach_names_the_smallest_and_leaves_the_model_as_it_was():
    model = residual()
    before = [weight.copy() for weight in model.get_weights()]
    with pytest.raises(ValueError, match=r"`target` 0.001 is below what this model can reach.*predicted at 0\.\d+"):
        prune_for_latency(model, 0.001, calibration_data=images((12, 12, 3)), latency_table=LatencyTable())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_calibration_data_is_required_and_other_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="`calibration_data` is required"):
        prune_for_latency(residual(), 0.5, calibration_data=None)
    with pytest.raises(ValueError, match="`threads` must be an integer >= 1"):
        prune_for_latency(residual(), 0.5, calibration_data=images((12, 12, 3)), threads=0)
    with pytest.raises(ValueError, match="no latency table at"):
        prune_for_latency(residual(), 0.5, calibration_data=images((12, 12, 3)), latency_table=tmp_path / "t.json")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="`cache_dir` .*file/x is not writable"):
        prune_for_latency(residual(), 0.5, calibration_data=images((12, 12, 3)), cache_dir=tmp_path / "file" / "x")
    with pytest.raises(ValueError, match=r"Calibration data .* has shape \(128, 8, 8, 3\), but the model takes"):
        prune_for_latency(residual(), 0.5, calibration_data=images((8, 8, 3)), latency_table=LatencyTable())
    assert [path.name for path in tmp_path.iterdir()] == ["file"]
