"""Run and time .tflite files with the LiteRT interpreter (`ai_edge_litert`)."""

import math
import statistics
import time
from pathlib import Path

import numpy as np

from rgp_keras._checks import check_int
from rgp_keras.errors import InputValueError


def load_interpreter(path, threads=None):
    """A LiteRT `Interpreter` for `path` (XNNPACK, `threads` CPU threads), tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if threads is not None:
        check_int("threads", threads, minimum=1)
    if not path.is_file():
        raise FileNotFoundError(f"No .tflite file at {path}.")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    except ValueError as error:
        raise InputValueError(f"{path} is not a LiteRT model: {error}") from None
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(path, inputs, *, batch_size=256, threads=None):
    """Outputs of the .tflite model at `path` for `inputs` (first axis = samples), in batches.

    `inputs`: one array for a single-input model; for several inputs a list in
    the model's input order or a dict by input name. Returns one array for a
    single-output model, else a list in the model's output order. Quantized
    inputs/outputs are converted with the file's own scale and zero point, so
    float arrays go in and come out either way.
    """
    interpreter = load_interpreter(path, threads)
    signatures = interpreter.get_signature_list()
    if not signatures:
        return _run_without_signature(interpreter, path, inputs, batch_size)
    key = next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    names, output_names = signatures[key]["inputs"], signatures[key]["outputs"]
    arrays = _named_inputs(inputs, names, path)
    details, output_details = runner.get_input_details(), runner.get_output_details()
    count = len(next(iter(arrays.values())))
    results = [[] for _ in output_names]
    for start in range(0, count, batch_size):
        feed = {name: _quantize(array[start : start + batch_size], details[name]) for name, array in arrays.items()}
        produced = runner(**feed)
        for result, name in zip(results, output_names):
            result.append(_dequantize(produced[name], output_details[name]))
    outputs = [np.concatenate(result) for result in results]
    return outputs[0] if len(outputs) == 1 else outputs


def _named_inputs(inputs, names, path):
    if isinstance(inputs, dict):
        if set(inputs) != set(names):
            raise InputValueError(f"{path} takes the inputs {names}; got a dict with keys {sorted(inputs)}.")
        arrays = {name: np.asarray(inputs[name]) for name in names}
    elif isinstance(inputs, (list, tuple)) and len(names) > 1:
        if len(inputs) != len(names):
            raise InputValueError(f"{path} takes {len(names)} inputs {names}; got a list of {len(inputs)} arrays.")
        arrays = {name: np.asarray(array) for name, array in zip(names, inputs)}
    elif len(names) == 1:
        arrays = {names[0]: np.asarray(inputs)}
    else:
        raise InputValueError(f"{path} takes {len(names)} inputs {names}: pass a list in that order or a dict by name.")
    counts = {name: len(array) for name, array in arrays.items()}
    if len(set(counts.values())) > 1:
        raise InputValueError(f"Every input needs the same number of samples; got {counts}.")
    return arrays


def _run_without_signature(interpreter, path, inputs, batch_size):
    """A file without signatures (not written by `export_tflite`): one input and one output only."""
    if len(interpreter.get_input_details()) != 1 or len(interpreter.get_output_details()) != 1:
        raise InputValueError(f"{path} has no signature and several inputs or outputs: their order is unknown.")
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    inputs = np.asarray(inputs)
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        if tuple(source["shape"]) != batch.shape:
            interpreter.resize_tensor_input(source["index"], batch.shape)
            interpreter.allocate_tensors()
            source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.set_tensor(source["index"], _quantize(batch, source))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(target["index"]), target))
    return np.concatenate(outputs)


def benchmark_tflite(path, *, threads=1, runs=30, warmup=5, min_total_ms=0.0):
    """Median latency in milliseconds of one single-sample invocation (after `warmup` runs).

    Returns a dict with median_ms, min_ms, runs and threads. The inputs are
    random data of the model's input shapes (latency does not depend on values).
    `min_total_ms`: after the `runs`, as many more as the median says bring
    the runs' time to at least this much (a steadier median for tiny files).
    """
    _check_runs(runs, warmup)
    interpreter = _ready(path, threads)
    times = _invocation_ms(interpreter, runs, warmup)
    more = math.ceil(min_total_ms / max(statistics.median(times), 1e-6)) - runs
    if more > 0:
        times += _invocation_ms(interpreter, more, 0)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": len(times), "threads": threads}


def compare_tflite(paths, *, threads=1, rounds=9, runs=30, warmup=5):
    """Several .tflite files timed side by side: in each of `rounds` rounds every file's median of `runs`
    invocations, the files in turn (the order reversed every other round, so that a slower spell of the
    machine is shared out). Returns one dict per file, in order: path, median_ms (the median of its rounds),
    ratio (the median over rounds of its time / the first file's in the same round), ratio_low / ratio_high
    (the lowest and highest round's), rounds, runs and threads.

    Example:
    >>> compare_tflite(["dense.tflite", "pruned.tflite"])[1]["ratio"]  # doctest: +SKIP
    0.31
    """
    paths = [str(path) for path in paths]
    if len(paths) < 2:
        raise InputValueError(f"`paths` must name two or more .tflite files to compare, got {len(paths)}.")
    check_int("rounds", rounds, minimum=1)
    _check_runs(runs, warmup)
    interpreters = [_ready(path, threads) for path in paths]
    times = [[0.0] * len(paths) for _ in range(rounds)]
    for round_ in range(rounds):
        order = range(len(paths)) if round_ % 2 == 0 else reversed(range(len(paths)))
        for index in order:
            times[round_][index] = statistics.median(_invocation_ms(interpreters[index], runs, warmup))
    results = []
    for index, path in enumerate(paths):
        ratios = [row[index] / row[0] for row in times]
        results.append({"path": path, "median_ms": statistics.median(row[index] for row in times),
                        "ratio": statistics.median(ratios), "ratio_low": min(ratios), "ratio_high": max(ratios),
                        "rounds": rounds, "runs": runs, "threads": threads})
    return results


def _check_runs(runs, warmup):
    if runs < 1 or warmup < 0:
        raise InputValueError(f"`runs` must be >= 1 and `warmup` >= 0, got runs={runs}, warmup={warmup}.")


def _ready(path, threads):
    """`path`'s interpreter with random inputs of its input shapes set (latency does not depend on values)."""
    interpreter = load_interpreter(path, threads)
    rng = np.random.default_rng(0)
    for source in interpreter.get_input_details():
        sample = rng.normal(size=[max(1, d) for d in source["shape"]])
        interpreter.set_tensor(source["index"], _quantize(sample, source))
    return interpreter


def _invocation_ms(interpreter, runs, warmup):
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(1000 * (time.perf_counter() - start))
    return times


def _quantize(values, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(detail["dtype"])
    return np.asarray(values, dtype=detail["dtype"])


def _dequantize(values, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale:
        return (values.astype("float32") - zero_point) * scale
    return values


__all__ = ["load_interpreter", "run_tflite", "benchmark_tflite", "compare_tflite"]
