"""A model's LiteRT latency, predicted from its segments' latencies: each segment timed once on this machine
(or read from a table measured on the target) and kept on disk.

A segment is one layer call and the calls the converter fuses into it
(BatchNormalization, activations, Dropout: each read only by it). Each is
converted to a .tflite file of its own and timed by the LiteRT interpreter
(XNNPACK, `threads`), on one sample. A whole file's latency is then the sum
over its segments, less one file call each: within 10 % on the benchmark CNN,
IRN and MobileNetV2 at 224x224, dense and thinned, one thread, in 8 of 9 rows
(benchmarks/latency_table.py). Files predicted under `WHOLE_FILE_BELOW_MS`
are timed whole instead (once, kept in the table as well): there the sum
missed the benchmark CNN's files by up to 20 %. What decides a
segment's latency is its key: the layers' classes and configs (names left
out) and the input shapes; weights do not matter for float files.

Example:
>>> prediction = predict_latency(model)  # doctest: +SKIP
>>> print(prediction)  # doctest: +SKIP
"""

import json
import os
import platform
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

from rgp_keras._checks import check_int
from rgp_keras.errors import InputValueError
from rgp_keras.model_walk import Alias, clone_layer, is_rgp_wrapper, layer_calls, reject_tf_keras, run_call

_FUSED = ("BatchNormalization", "ReLU", "Activation", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
          "GaussianNoise", "GaussianDropout", "AlphaDropout")
_RUNS, _WARMUP, _ROUNDS = 20, 3, 3
_ROUND_MS = 10  # a file's round of runs lasts at least this long (more runs for files faster than 0.5 ms)
# Rounds of a whole file's timing, each with an interpreter of its own: one tiny file's medians varied by +-7 %
# between interpreters (0.31-0.35 ms for the dense CNN; a one-off probe), and a plan is the ratio of two of them.
_WHOLE_ROUNDS = 9
# Files whose segments sum to less are timed whole: on the benchmark CNN (0.06-0.35 ms files: dense, and thinned
# uniformly to 0.3-0.8 of its width) the sums were 0.80-1.07x the whole files' times, so the thinned files' ratios
# to the dense one were off by up to 26 %; segments timed 20x longer summed to 0.88-1.10x (a one-off probe): what
# passes between segments, and thinned weights that fit the caches, are not in a segment timed alone.
WHOLE_FILE_BELOW_MS = 1.0
_INVOKE = "invoke"  # the table's entry for what one call of a file costs beside its operations


class Segment(NamedTuple):
    """Calls converted and timed together: the first call, then those fused into it."""

    name: str
    key: str
    calls: tuple
    shapes: tuple  # the first call's input shapes, batch 1


class LatencyPrediction(NamedTuple):
    """A file's predicted latency: `total_ms`, and (segment name, ms) per segment in model order (each
    segment's time less the cost of calling a file, which `total_ms` counts once)."""

    total_ms: float
    segments: list

    def __str__(self):
        width = max((len(name) for name, _ in self.segments), default=7)
        lines = [f"{'segment':<{width}}  {'ms':>8}  share"]
        lines += [f"{name:<{width}}  {ms:8.3f}  {ms / max(self.total_ms, 1e-12):5.1%}" for name, ms in self.segments]
        return "\n".join(lines + [f"{'total':<{width}}  {self.total_ms:8.3f}"])


class LatencyTable:
    """Segment latencies (ms) by key, measured at `threads` LiteRT threads on one machine; a JSON file at
    `path` (None: kept in memory only). `machine` names where the times come from (LiteRT version, CPU)."""

    def __init__(self, path=None, threads=1):
        self.path = None if path is None else Path(path)
        self.threads, self.machine, self.entries = threads, _this_machine(), {}
        if self.path is not None and self.path.is_file():
            try:
                stored = json.loads(self.path.read_text())
                threads, machine, entries = stored["threads"], stored["machine"], dict(stored["entries"])
                if not all(isinstance(ms, (int, float)) and ms >= 0 for ms in entries.values()):
                    raise ValueError("its times are not all numbers >= 0")
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise InputValueError(f"{self.path} is not a latency table (a JSON file written by rgp_keras: "
                                      f"{{'threads', 'machine', 'entries'}}): {error}") from None
            self.threads, self.machine, self.entries = threads, machine, entries

    @classmethod
    def default(cls, threads=1, cache_dir=None):
        """This machine's table at `threads` in `cache_dir` (default: the user's cache folder), one file per
        LiteRT version, CPU and thread count. The folder must be writable (checked now, not after minutes of
        timing); a cache file that cannot be read is measured again, with a warning."""
        folder = Path(cache_dir) if cache_dir is not None else _cache_folder()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as error:
            raise InputValueError(
                f"`cache_dir` {folder} is not writable ({error.strerror or error}): the measured latencies are kept "
                "there. Pass a folder you can write to as `cache_dir`, or a measured table as the latency table."
            ) from None
        machine = _this_machine()
        name = f"{machine['litert']}-{machine['cpu']}-{threads}threads".replace(" ", "_").replace("/", "_")
        path = folder / f"{name}.json"
        try:
            table = cls(path, threads)
            if (table.threads, table.machine) != (threads, machine):  # the file's name says what it must hold
                raise InputValueError(f"{path} holds times at {table.threads} thread(s) on {table.machine}")
        except InputValueError as error:
            warnings.warn(f"rgp_keras: the latency cache file is corrupt, so it is measured again: {error}",
                          stacklevel=3)
            table = cls(None, threads)
            table.path = path
        return table

    def missing(self, segments):
        return {segment.key: segment for segment in segments if segment.key not in self.entries}

    def measure(self, segments, progress=False):
        """Time the segments not in the table yet (each converted once); save the table. Returns how many
        were measured."""
        missing = list(self.missing(segments).values())
        self.times([(segment.key, segment.name, lambda segment=segment: _segment_model(segment))
                    for segment in missing], progress, "segment(s)")
        return len(missing)

    def times(self, wanted, progress=False, what="time(s)"):
        """The ms of each (key, name, make) of `wanted`: from the table, or, for keys not in it yet, of the model
        `make()` builds, converted and timed here (side by side, in rounds) and kept in the table (`what`: what
        an entry is, for the error a foreign table raises)."""
        missing = {key: (name, make) for key, name, make in wanted if key not in self.entries}
        if missing:
            if not self.is_local:
                raise InputValueError(
                    f"The latency table {self.path} was measured on {self.machine}, not on this machine "
                    f"({_this_machine()}), and lacks {len(missing)} {what}, first {next(iter(missing.values()))[0]!r}"
                    ": measure them where the table comes from (`rgp bench-layers MODEL -o TABLE`) or use this "
                    "machine's table.")
            models = [make() for _, make in missing.values()]
            if _INVOKE not in self.entries:
                models.append(_invoke_model())
            medians = self._time(models, _progress_bar(len(models)) if progress else None)
            if _INVOKE not in self.entries:
                self.entries[_INVOKE] = medians.pop()
            self.entries.update(zip(missing, medians))
            self.save()
        return [self.entries[key] for key, _, _ in wanted]

    def whole_ms(self, model, segments, reference=None):
        """The time of `model`'s whole file (its `segments`), timed once and kept; None with a table from
        another machine (the plans made with it cannot be timed whole: its sums of segments serve throughout).

        `reference`: (a model, its segments) whose whole file is timed beside this one, both in each round: the
        time kept is then the reference's kept time times the median ratio of the two. A file of a fraction of a
        millisecond times 15 % apart at two moments of one session (the benchmark IRN's dense file: 0.072 and
        0.084 ms), so files timed apart compare badly; beside one reference they keep its scale."""
        if not self.is_local:
            return None
        key = _whole_key(segments)
        if key not in self.entries:
            if reference is None:
                self.entries[key] = self._time([model], None, rounds=_WHOLE_ROUNDS)[0]
            else:
                base = self.whole_ms(*reference)
                mine, theirs = self._time([model, reference[0]], None, rounds=_WHOLE_ROUNDS, ratios=True)
                self.entries[key] = base * mine / theirs
            self.save()
        return self.entries[key]

    def _time(self, models, bar, rounds=_ROUNDS, ratios=False):
        """Each model's LiteRT latency (ms): converted once, then every file timed in each of `rounds` rounds in
        turn (a slower spell of the machine is shared out), the median of its rounds. `ratios`: instead, the
        median over rounds of each file's time / the last file's in the same round (the last gives 1)."""
        with tempfile.TemporaryDirectory() as folder:
            paths = []
            for number, model in enumerate(models):
                paths.append(os.path.join(folder, f"{number}.tflite"))
                _export(model, paths[-1], self.threads)
                if bar is not None:
                    bar.update(number + 1)
            times = [[_time_file(path, self.threads) for path in paths] for _ in range(rounds)]
        if ratios:
            times = [[ms / row[-1] for ms in row] for row in times]
        return [statistics.median(column) for column in zip(*times)]

    @property
    def is_local(self):
        """Whether the times were measured on this machine (so missing segments may be timed here)."""
        return self.machine == _this_machine()

    @property
    def call_ms(self):
        """What one call of a file costs beside its operations (measured with the first segments)."""
        return self.entries[_INVOKE]

    def segment_ms(self, key):
        """A measured segment's time in a whole file: its own file's time less one call's cost."""
        return max(self.entries[key] - self.call_ms, 0.0)

    def save(self):
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({"threads": self.threads, "machine": self.machine, "entries": self.entries},
                                      indent=0, sort_keys=True))
        os.replace(partial, self.path)


def _whole_key(segments):
    """A whole file's table key: its segments' keys and how they are wired."""
    made = {key: index for index, segment in enumerate(segments) for key in segment.calls[-1].outputs}
    wiring = [[made.get(key, -1) for key in segment.calls[0].inputs] for segment in segments]
    return json.dumps(["whole file", [segment.key for segment in segments], wiring])


def predict_latency(model, *, threads=1, table=None, cache_dir=None, verbose="auto", reference=None):
    """The LiteRT latency (ms, one sample, `threads` threads) of `model` exported as a float .tflite file,
    predicted as the sum of its segments' latencies (see the module).

    Segments not in the table are converted and timed once (a progress bar
    for 16 or more, or with verbose=1); the table is kept in `cache_dir`
    (default: the user's cache folder) per LiteRT version, CPU and threads,
    so a second call measures nothing. `table`: a `LatencyTable` or the path
    of one (`rgp bench-layers`), e.g. measured on the target device; it must
    hold every segment of `model`. `reference`: a model (the dense one a
    pruned model is compared with) whose file a file predicted under
    `WHOLE_FILE_BELOW_MS`, timed whole, is timed beside, so that the two
    keep their ratio (`LatencyTable.whole_ms`): the prediction is then that
    ratio times the reference's prediction (its segments' sum where it is
    over `WHOLE_FILE_BELOW_MS`), so that the two compare on one scale.

    Example:
    >>> predict_latency(keras.applications.MobileNetV2(weights=None)).total_ms  # doctest: +SKIP
    """
    from rgp_keras.data_aware.steps import progress_wanted

    check_int("threads", threads, minimum=1)
    progress_wanted(verbose, 0)  # checks `verbose`
    segments = model_segments(model)
    table = resolve_table(table, threads, cache_dir)
    table.measure(segments, progress=progress_wanted(verbose, len(table.missing(segments))))
    beside = None if reference is None else (reference, model_segments(reference))
    return _predicted(model, segments, table, beside)


def _predicted(model, segments, table, beside=None):
    """`predict_latency` of `model` (its `segments`, already in `table`); `beside`: the reference and its
    segments."""
    parts = [(segment.name, table.segment_ms(segment.key)) for segment in segments]
    total = table.call_ms + sum(ms for _, ms in parts)
    if total < WHOLE_FILE_BELOW_MS:
        whole = table.whole_ms(model, segments, beside)
        if whole is not None and beside is not None:  # on the scale of the reference's prediction
            table.measure(beside[1])
            whole *= _predicted(*beside, table).total_ms / table.whole_ms(*beside)
        if whole is not None:
            share = (whole - table.call_ms) / max(total - table.call_ms, 1e-12)  # the segments' parts of it
            parts, total = [(name, ms * share) for name, ms in parts], whole
    return LatencyPrediction(total, parts)


def resolve_table(table, threads, cache_dir):
    """The `LatencyTable` that `table` names (None: this machine's, in `cache_dir`), checked to hold times at
    `threads` threads."""
    if table is None:
        table = LatencyTable.default(threads, cache_dir)
    elif not isinstance(table, LatencyTable):
        if not Path(table).is_file():
            raise InputValueError(f"`table`: no latency table at {table} (write one with `rgp bench-layers`).")
        table = LatencyTable(table)
    if table.threads != threads:
        raise InputValueError(
            f"The latency table {table.path} holds times at {table.threads} thread(s), not at `threads`={threads}.")
    return table


def model_segments(model):
    """The `Segment`s of a Keras 3 functional or Sequential model, in topological order."""
    reject_tf_keras(model, "predict_latency")
    walk = layer_calls(model, nested=True)
    readers = {}
    for call in walk.calls:
        for key in set(call.inputs):
            readers[key] = readers.get(key, 0) + 1
    groups = []
    for call in walk.calls:
        if isinstance(call.layer, Alias):
            continue
        previous = groups[-1][-1] if groups else None
        if (previous is not None and type(call.layer).__name__ in _FUSED and len(call.inputs) == 1
                and call.inputs[0] in previous.outputs and readers[call.inputs[0]] == 1
                and call.inputs[0] not in walk.outputs):
            groups[-1].append(call)
        else:
            groups.append([call])
    segments = []
    for calls in groups:
        inputs = tuple(dict.fromkeys(calls[0].inputs))
        shapes = tuple((1, *walk.shapes[key][1:]) for key in inputs)
        if any(d is None for shape in shapes for d in shape):
            raise InputValueError(f"Layer {calls[0].layer.name!r} reads inputs of unknown size {shapes}: latency "
                                  "prediction needs a model with fixed input shapes.")
        key = json.dumps([[describe(call.layer) for call in calls], shapes], sort_keys=True, default=str)
        segments.append(Segment(calls[0].layer.name, key, tuple(calls), shapes))
    return segments


def describe(layer):
    config = {name: value for name, value in layer.get_config().items() if name != "name"}
    if is_rgp_wrapper(layer):  # and the wrapped layer's name
        config["layer"] = {**config["layer"], "config": describe(layer.layer)[1]}
    return [f"{type(layer).__module__}.{type(layer).__qualname__}", config]


def _segment_model(segment):
    """A model of new layers of the segment's classes and configs (no weights copied) on batch-1 inputs."""
    import keras

    first = segment.calls[0]
    inputs = [keras.Input(batch_shape=shape) for shape in segment.shapes]
    values = dict(zip(dict.fromkeys(first.inputs), inputs))
    for call in segment.calls:
        values.update(zip(call.outputs, run_call(call._replace(layer=clone_layer(call.layer)), values)))
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, values[segment.calls[-1].outputs[0]])


def _export(model, path, threads):
    """`model` as a float .tflite file; RGP-masked layers as the compact kernels `export_tflite` writes."""
    if any(is_rgp_wrapper(layer) for layer in model.layers):
        from rgp_keras.export import export_tflite

        export_tflite(model, path, threads=threads)
    else:
        model.export(path, format="litert", verbose=False)


def _invoke_model():
    """A file of one tiny operation: what calling a file costs."""
    import keras

    return keras.Sequential([keras.Input(batch_shape=(1, 1)), keras.layers.ReLU()])


def _time_file(path, threads):
    """The median ms of one call of the file, over _RUNS runs or as many more as take _ROUND_MS."""
    from rgp_keras.litert import benchmark_tflite

    return benchmark_tflite(path, threads=threads, runs=_RUNS, warmup=_WARMUP, min_total_ms=_ROUND_MS)["median_ms"]


def _this_machine():
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"litert": f"ai-edge-litert {version('ai-edge-litert')}", "cpu": cpu}


def _cache_folder():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rgp_keras" / "latency"


def _progress_bar(count):
    import keras

    print(f"rgp_keras: timing {count} layer segment(s) on LiteRT (each once; kept on disk)")
    return keras.utils.Progbar(count, unit_name="segment")
