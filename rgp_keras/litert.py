"""Run and time .tflite files with the LiteRT interpreter (`ai_edge_litert`)."""

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
    """Outputs of the .tflite model at `path` for `inputs` (one array, first axis = samples).

    Quantized inputs/outputs are converted with the file's own scale and zero
    point, so a float array goes in and a float array comes out either way.
    """
    interpreter = load_interpreter(path, threads)
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


def benchmark_tflite(path, *, threads=1, runs=30, warmup=5):
    """Median latency in milliseconds of one single-sample invocation (after `warmup` runs).

    Returns a dict with median_ms, min_ms, runs and threads. The input is
    random data of the model's input shape (latency does not depend on values).
    """
    if runs < 1 or warmup < 0:
        raise InputValueError(f"`runs` must be >= 1 and `warmup` >= 0, got runs={runs}, warmup={warmup}.")
    interpreter = load_interpreter(path, threads)
    source = interpreter.get_input_details()[0]
    sample = np.random.default_rng(0).normal(size=[max(1, d) for d in source["shape"]])
    interpreter.set_tensor(source["index"], _quantize(sample, source))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": runs, "threads": threads}


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


__all__ = ["load_interpreter", "run_tflite", "benchmark_tflite"]
