"""Calibration data for data-aware pruning: numpy arrays, `tf.data.Dataset`s or generators -> checked arrays.

Whatever the form, the result is one float32 numpy array per model input, every
sample of the calibration set in memory (calibration sets are small: hundreds
to a few thousand samples). Errors name what was wrong and what is accepted;
the user's data is never modified.
"""

import itertools
import numbers

import numpy as np

from rgp_keras.errors import InputTypeError, InputValueError

# Datasets and generators are read until exhausted or this many samples, so that an
# endless generator (the usual Keras training stream) does not hang the pruning.
STREAM_SAMPLES = 2048


def calibration_arrays(data, input_shapes, input_names, samples=None):
    """`data` as a list of float32 arrays, one per model input, each `(samples, *input_shape)`.

    Args:
        data: a numpy array (single-input models), a list/tuple/dict of arrays
            (one per input, dict keyed by input name), a `tf.data.Dataset` or a
            Python iterable/generator of batches. Dataset and generator elements
            may be `x` or `(x, y[, sample_weight])` as for `model.fit`: labels are
            ignored.
        input_shapes: the model's input shapes, batch dimension first.
        input_names: the model's input names (for dict data and messages).
        samples: use at most this many samples (default: every sample of an
            array; datasets and generators are read until exhausted or
            `STREAM_SAMPLES`).
    """
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
            raise InputValueError(f"`calibration_samples` must be an integer >= 1, got {samples!r}.")
    if _is_stream(data):
        arrays = _read_stream(data, len(input_shapes), input_names, samples or STREAM_SAMPLES)
    else:
        arrays = _split_inputs(data, len(input_shapes), input_names, "`calibration_data`")
        arrays = [_as_array(array, name) for array, name in zip(arrays, input_names)]
    counts = {len(array) for array in arrays}
    if len(counts) != 1:
        raise InputValueError(f"Calibration inputs {list(input_names)} have different sample counts: {[len(a) for a in arrays]}.")
    if counts == {0}:
        raise InputValueError("`calibration_data` holds no samples; pass at least one (a few hundred are typical).")
    if samples is not None:
        arrays = [array[:samples] for array in arrays]
    return [_check(array, shape, name) for array, shape, name in zip(arrays, input_shapes, input_names)]


def _is_stream(data):
    if isinstance(data, (np.ndarray, list, tuple, dict)) or hasattr(data, "__array__"):
        return False
    return hasattr(data, "__iter__") or hasattr(data, "__next__")


def _read_stream(data, inputs, names, limit):
    parts, count = [], 0
    for element in itertools.islice(iter(data), limit):
        if isinstance(element, tuple) and not (inputs > 1 and len(element) == inputs and _all_arrays(element)):
            element = element[0]  # (x, y[, sample_weight]): labels ignored
        batch = [_as_array(a, name) for a, name in zip(_split_inputs(element, inputs, names, "A calibration batch"), names)]
        parts.append(batch)
        count += len(batch[0]) if batch[0].ndim else 1
        if count >= limit:
            break
    if not parts:
        raise InputValueError(
            "`calibration_data` yielded nothing: the dataset or generator is empty (or already exhausted); "
            "pass a numpy array, a tf.data.Dataset or a generator of input batches."
        )
    return [np.concatenate(list(column)) for column in zip(*parts)]


def _all_arrays(items):
    return all(isinstance(item, np.ndarray) or hasattr(item, "numpy") for item in items)


def _split_inputs(data, inputs, names, what):
    if isinstance(data, dict):
        missing = [name for name in names if name not in data]
        if missing:
            raise InputValueError(f"{what} is a dict without the model's inputs {missing}; its keys are {sorted(data)}.")
        return [data[name] for name in names]
    if isinstance(data, (list, tuple)):
        if len(data) != inputs:
            raise InputValueError(
                f"{what} holds {len(data)} arrays but the model has {inputs} input(s) {list(names)}; "
                "pass one array per input (a list in input order, or a dict by input name)."
            )
        return list(data)
    if inputs != 1:
        raise InputValueError(
            f"The model has {inputs} inputs {list(names)} but {what} is a single array; pass a list of "
            f"{inputs} arrays in input order or a dict keyed by input name."
        )
    return [data]


def _as_array(value, name):
    if hasattr(value, "numpy"):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InputTypeError(f"Calibration data for input {name!r} is not an array ({error}).") from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputTypeError(
            f"Calibration data for input {name!r} has dtype {array.dtype}; numeric arrays (float or int) are accepted."
        )
    return array


def _check(array, shape, name):
    expected = tuple(shape[1:])
    if array.ndim != len(shape) or any(e is not None and e != got for e, got in zip(expected, array.shape[1:])):
        raise InputValueError(
            f"Calibration data for input {name!r} has shape {array.shape}, but the model takes "
            f"(samples, {', '.join('any' if d is None else str(d) for d in expected)})."
        )
    array = array.astype("float32")
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise InputValueError(f"Calibration data for input {name!r} holds {bad} NaN or infinite values; pass finite inputs.")
    return array
