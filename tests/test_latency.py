"""predict_latency: a model's LiteRT latency as the sum of its segments' times, each measured once and cached."""

import json
import shutil

import keras
import numpy as np
import pytest

from rgp_keras import benchmark_tflite, export_tflite, prune_channels, prune_regular_graph
from rgp_keras.cli import main
from rgp_keras.plan import latency as latency_module
from rgp_keras.plan.latency import LatencyTable, model_segments, predict_latency

layers = keras.layers


def branchy():
    inputs = keras.Input((16, 16, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)))
    y = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Add()([x, y])
    x = layers.Dropout(0.1)(layers.MaxPooling2D()(x))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(64, 1)(x))
    return keras.Model(inputs, layers.Dense(10)(x))


def _count_conversions(patch):
    """The list each converted segment is appended to (each then timed)."""
    converted = []
    real = latency_module._segment_model
    patch.setattr(latency_module, "_segment_model", lambda segment: converted.append(segment) or real(segment))
    return converted


@pytest.fixture
def counted(monkeypatch):
    return _count_conversions(monkeypatch)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """branchy()'s prediction from an empty cache folder, and how many segments that converted."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        converted = _count_conversions(patch)
        prediction = predict_latency(branchy(), cache_dir=folder, verbose=0)
    return folder, prediction, len(converted)


def test_segments_fuse_what_the_converter_fuses_and_keep_merges_on_their_own():
    model = branchy()
    conv, bn, relu = (layer.name for layer in model.layers[1:4])
    segments = model_segments(model)
    assert [len(segment.calls) for segment in segments][:1] == [3]  # conv + BatchNormalization + ReLU
    assert [call.layer.name for call in segments[0].calls] == [conv, bn, relu]
    add = next(segment for segment in segments if isinstance(segment.calls[0].layer, layers.Add))
    assert add.shapes == ((1, 16, 16, 32), (1, 16, 16, 32))  # both inputs, batch 1
    # conv+bn+relu, conv (its activation inside), add, pool+dropout, conv, gap, dense
    assert len(segments) == 7 and [call.layer.name for call in segments[3].calls][1:] == [model.layers[7].name]


def test_prediction_sums_the_segments_and_a_second_call_measures_nothing(measured, counted):
    folder, first, converted = measured
    call = LatencyTable.default(cache_dir=folder).entries["invoke"]  # a file's call, counted once
    assert converted == 7 and first.total_ms == pytest.approx(call + sum(ms for _, ms in first.segments))
    model = branchy()  # same shapes, other layer names
    assert [name for name, _ in first.segments][1:] != [segment.name for segment in model_segments(model)][1:]
    again = predict_latency(model, cache_dir=folder, verbose=0)
    assert not counted and again.total_ms == first.total_ms
    (table,) = folder.glob("*.json")
    assert "1threads" in table.name and "ai-edge-litert" in table.name
    assert len(json.loads(table.read_text())["entries"]) == 7 + 1 + 1  # + the whole file: faster than 1 ms
    assert "total" in str(first) and first.segments[0][0] in str(first)


def test_a_thinner_model_is_predicted_faster(tmp_path):
    # how near the prediction is to the measured file (within 5 % on an idle machine) is
    # benchmarks/latency_table.py's job: the test workers share the cores
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(64, 3, padding="same"), layers.ReLU(),
                              layers.Conv2D(128, 3, padding="same", activation="relu", name="wide"),
                              layers.GlobalAveragePooling2D(), layers.Dense(10)])
    dense = predict_latency(model, cache_dir=tmp_path, verbose=0)
    thin = predict_latency(prune_channels(model, keep=0.5, verbose=0), cache_dir=tmp_path, verbose=0)
    assert [name for name, _ in thin.segments] == [name for name, _ in dense.segments]
    assert thin.total_ms < 0.8 * dense.total_ms
    # its 64 -> 128 layer timed as the compact kernel export_tflite writes (16/32-channel groups); whether that
    # is faster is benchmarks/latency_planner.py's to say: times from separate calls share the cores here
    pruned = prune_regular_graph(model, sparsity=0.5, nodes=4, seed=0)
    masked = predict_latency(pruned, cache_dir=tmp_path, verbose=0)
    assert [name for name, _ in masked.segments] == [name.replace("wide", "rgp_wide") for name, _ in dense.segments]
    segments = [key for key in LatencyTable.default(cache_dir=tmp_path).entries if "whole file" not in key]
    assert len(segments) == 2 * len(dense.segments) + 1 + 1  # + compact


def test_a_file_faster_than_1_ms_is_timed_whole_once(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(8, 3), layers.GlobalAveragePooling2D(),
                              layers.Dense(4)])
    timed = []

    def time(self, models, bar, rounds=3):  # each segment 0.1 ms, a file's call 0.01 ms, the whole file 0.5 ms
        timed.extend(models)
        return [0.5 if model in whole else 0.01 if len(model.layers) == 1 else 0.1 for model in models]

    whole = [model]
    monkeypatch.setattr(LatencyTable, "_time", time)
    prediction = predict_latency(model, cache_dir=tmp_path, verbose=0)
    assert model in timed and prediction.total_ms == pytest.approx(0.5)  # not 0.01 + 3 x 0.09
    assert sum(ms for _, ms in prediction.segments) == pytest.approx(0.49)  # the segments' shares of it
    timed.clear()
    renamed = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(8, 3), layers.GlobalAveragePooling2D(),
                                layers.Dense(4)])
    assert predict_latency(renamed, cache_dir=tmp_path, verbose=0).total_ms == pytest.approx(0.5) and not timed


def test_a_small_file_timed_beside_a_reference_keeps_its_ratio_to_the_reference_kept(tmp_path, monkeypatch):
    dense = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(16, 3), layers.GlobalAveragePooling2D(),
                              layers.Dense(4)])
    thin = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(8, 3), layers.GlobalAveragePooling2D(),
                             layers.Dense(4)])
    clock = {"speed": 1.0}  # the machine slows down between the two timings
    whole_ms = {id(dense): 0.4, id(thin): 0.2}

    def time(self, models, bar, rounds=3, ratios=False):
        times = [clock["speed"] * whole_ms.get(id(model), 0.01 if len(model.layers) == 1 else 0.05)
                 for model in models]
        return [ms / times[-1] for ms in times] if ratios else times

    monkeypatch.setattr(LatencyTable, "_time", time)
    table = LatencyTable(tmp_path / "table.json")
    assert predict_latency(dense, table=table, verbose=0).total_ms == pytest.approx(0.4)
    clock["speed"] = 1.3
    alone = predict_latency(thin, table=LatencyTable(tmp_path / "other.json"), verbose=0).total_ms
    beside = predict_latency(thin, table=table, verbose=0, reference=dense).total_ms
    assert alone == pytest.approx(0.26) and beside == pytest.approx(0.2)  # 0.5x the dense file, as timed beside it


def test_a_small_file_beside_a_reference_predicted_by_its_segments_keeps_that_scale(tmp_path, monkeypatch):
    dense = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(16, 3), layers.GlobalAveragePooling2D(),
                              layers.Dense(4)])
    thin = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(8, 3), layers.GlobalAveragePooling2D(),
                             layers.Dense(4)])
    clock = {"segment": 0.6}  # dense: its segments sum over 1 ms; the whole file runs 2.0 ms, the thin one 0.5 ms
    whole_ms = {id(dense): 2.0, id(thin): 0.5}

    def time(self, models, bar, rounds=3, ratios=False):
        times = [whole_ms.get(id(model), 0.01 if len(model.layers) == 1 else clock["segment"]) for model in models]
        return [ms / times[-1] for ms in times] if ratios else times

    monkeypatch.setattr(LatencyTable, "_time", time)
    table = LatencyTable(tmp_path / "table.json")
    reference = predict_latency(dense, table=table, verbose=0).total_ms
    assert reference > 1.0 and reference != pytest.approx(2.0)  # the sum of its segments, not its whole file
    clock["segment"] = 0.05
    beside = predict_latency(thin, table=table, verbose=0, reference=dense).total_ms
    assert beside == pytest.approx(0.25 * reference)  # a quarter of the dense file, on the dense prediction's scale


def test_a_table_from_another_machine_is_used_and_never_extended(measured, tmp_path, counted, capsys, monkeypatch):
    model = branchy()
    path = tmp_path / "board.json"
    shutil.copy(next(measured[0].glob("*.json")), path)  # as if `rgp bench-layers` had run on the board
    # what bench-layers adds (widths, RGP kernels) is converted but not timed here: the docs' CLI lines time it
    monkeypatch.setattr(LatencyTable, "_time", lambda self, models, bar, rounds=3: [1.0] * len(models))
    assert main(["bench-layers", "--json", str(_saved(model, tmp_path)), "-o", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["total_ms"] == pytest.approx(measured[1].total_ms)
    counted.clear()  # (bench-layers also timed the widths and RGP kernels prune_for_latency plans with)
    stored = json.loads(path.read_text())
    stored["machine"] = {"litert": "ai-edge-litert 2.3.0", "cpu": "Cortex-A76"}
    path.write_text(json.dumps(stored))
    call = stored["entries"]["invoke"]  # segment sums, though the board timed the whole file: so are its plans
    # (a segment timed faster than a file's call counts 0: timing noise on the tiniest ones)
    summed = call + sum(max(stored["entries"][segment.key] - call, 0.0) for segment in model_segments(model))
    assert predict_latency(model, table=path, verbose=0).total_ms == pytest.approx(summed)
    stored["entries"] = {key: 2 * ms for key, ms in stored["entries"].items()}  # a slower board
    path.write_text(json.dumps(stored))
    assert predict_latency(model, table=path, verbose=0).total_ms == pytest.approx(2 * summed)
    assert not counted  # nothing measured here
    wider = keras.Sequential([keras.Input((16, 16, 3)), layers.Conv2D(48, 3)])
    with pytest.raises(ValueError, match=r"measured on .*Cortex-A76.*lacks 1 segment.*rgp bench-layers"):
        predict_latency(wider, table=path, verbose=0)


def _saved(model, folder):
    path = folder / "model.keras"
    model.save(path)
    return path


def test_bad_inputs_name_what_is_wrong_and_what_is_accepted(tmp_path, capsys):
    model = branchy()
    with pytest.raises(ValueError, match="`threads` must be"):
        predict_latency(model, threads=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match='`verbose` must be "auto".*0 or 1'):
        predict_latency(model, cache_dir=tmp_path, verbose=2)
    with pytest.raises(ValueError, match="no latency table at .*rgp bench-layers"):
        predict_latency(model, table=tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a latency table"):
        predict_latency(model, table=tmp_path / "bad.json")
    LatencyTable(tmp_path / "two.json", threads=2).save()
    with pytest.raises(ValueError, match="two.json holds times at 2 thread.*not at `threads`=1"):
        predict_latency(model, table=tmp_path / "two.json")
    free = keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(8, 3)])
    with pytest.raises(ValueError, match="unknown size.*fixed input shapes"):
        predict_latency(free, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*threads.json"))  # nothing measured, nothing written
    assert main(["bench-layers", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "t.json")]) == 2
    assert "rgp bench-layers: error:" in capsys.readouterr().err and not (tmp_path / "t.json").exists()
    assert main(["bench-layers", str(_saved(model, tmp_path)), "-o", str(tmp_path / "two.json")]) == 2
    assert "holds times at 2 thread(s), not at --threads=1" in capsys.readouterr().err


def test_a_corrupt_cache_is_measured_again_with_a_warning_and_an_unwritable_one_is_named(measured, tmp_path,
                                                                                          monkeypatch):
    folder, first, converted = measured
    (cached,) = folder.glob("*.json")
    # (not timed again)
    monkeypatch.setattr(LatencyTable, "_time", lambda self, models, bar, rounds=3: [1.0] * len(models))
    for broken in ("{not json", json.dumps({"threads": 1, "machine": {}, "entries": {"a": "fast"}})):
        (tmp_path / cached.name).write_text(broken)
        counted = _count_conversions(monkeypatch)
        with pytest.warns(UserWarning, match="latency cache file is corrupt, so it is measured again"):
            again = predict_latency(branchy(), cache_dir=tmp_path, verbose=0)
        assert len(counted) == converted and len(again.segments) == len(first.segments)
        assert len(json.loads((tmp_path / cached.name).read_text())["entries"]) == converted + 1
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")  # (a read-only folder would not stop root, who may run the tests)
    with pytest.raises(ValueError, match=r"`cache_dir` .*a file/latency is not writable .*Pass a folder you can"):
        predict_latency(branchy(), cache_dir=blocked / "latency", verbose=0)
    assert blocked.read_text() == "not a folder"


def test_inputs_of_every_shape_are_filled_when_timing(tmp_path):
    a, b = keras.Input((4,)), keras.Input((6,))
    model = keras.Model([a, b], layers.Concatenate()([layers.Dense(3)(a), layers.Dense(3)(b)]))
    path = export_tflite(model, tmp_path / "two_inputs.tflite").path
    assert np.isfinite(benchmark_tflite(path, runs=3)["median_ms"])


def test_a_tiny_file_is_timed_for_at_least_min_total_ms(tmp_path):
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    path = export_tflite(model, tmp_path / "tiny.tflite").path
    assert benchmark_tflite(path, runs=3)["runs"] == 3
    timed = benchmark_tflite(path, runs=3, min_total_ms=20.0)  # a call of this file takes microseconds
    assert timed["runs"] > 100 and timed["runs"] * timed["median_ms"] > 5.0
