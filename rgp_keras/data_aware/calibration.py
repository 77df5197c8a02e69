"""Calibration data for data-aware pruning: numpy arrays, `tf.data.Dataset`s or generators -> checked arrays.

Whatever the form, the result is one float32 numpy array per model input, every
sample of the calibration set in memory (calibration sets are small: hundreds
to a few thousand samples). Errors name what was wrong and what is accepted;
the user's data is never modified.

Reconstruction also fits on convex mixes of pairs of calibration samples
(mixup of the inputs only: the dense model gives the targets of any input, so no
labels are needed). A mix is a new point of the network's nonlinear feature
space, so least-squares fits that are short of rows (a Dense layer reading
hundreds of features, one row per sample) generalise better (what that kept on
MLPs: docs/data-aware.md).
Convolutions get a row per sample and position, enough already (on a CNN they
gained nothing and took much longer), and large inputs would multiply the cost, so
"auto" mixes only when a masked layer is short of rows and the set is small,
and only the fits short of rows use the mixes.
"""

import itertools
import numbers

import numpy as np

from rgp_keras.errors import InputTypeError, InputValueError

# "auto" mixes: when a masked layer's fit has fewer than MIX_BELOW rows per weight, up to MIX_FACTOR x the
# samples in all while the set holds at most MIX_VALUES input values.
MIX_BELOW = 32
MIX_FACTOR = 8
MIX_VALUES = 1 << 23
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
        raise InputValueError(f"Calibration inputs {list(input_names)} have different sample counts: "
                              f"{[len(a) for a in arrays]}.")
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
        batch = [
            _as_array(a, name) for a, name in zip(_split_inputs(element, inputs, names, "A calibration batch"), names)
        ]
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
            raise InputValueError(
                f"{what} is a dict without the model's inputs {missing}; its keys are {sorted(data)}."
            )
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
        raise InputValueError(
            f"Calibration data for input {name!r} holds {bad} NaN or infinite values; pass finite inputs."
        )
    return array


def mix_count(mixes, arrays, input_dtypes, input_names, rows_per_weight=0.0):
    """How many mixes `mixes` ("auto" or an integer >= 0) adds to `arrays`, and why none when "auto" gives 0.

    `rows_per_weight`: the fewest least-squares rows per fitted weight among
    the masked layers with the samples alone ("auto" adds none from MIX_BELOW).

    Mixing needs floating-point model inputs (a mix of token ids or indices
    means nothing): "auto" then adds none, an explicit count is an error.
    """
    if isinstance(mixes, bool) or not (mixes == "auto" or isinstance(mixes, numbers.Integral) and mixes >= 0):
        raise InputValueError(
            f'`calibration_mixes` must be "auto" or an integer >= 0 (0: fit on the samples only), got {mixes!r}.'
        )
    dtypes = [str(getattr(dtype, "name", dtype)) for dtype in input_dtypes]  # Keras strings or tf.DType
    not_float = [f"{name!r} ({dtype})" for name, dtype in zip(input_names, dtypes) if "float" not in dtype]
    if not_float:
        if mixes == "auto" or mixes == 0:
            return 0, f"no mixes: input {', '.join(not_float)} is not floating-point"
        raise InputValueError(
            f"`calibration_mixes={mixes}` mixes pairs of inputs, but input {', '.join(not_float)} is not "
            'floating-point (a mix of ids means nothing); pass calibration_mixes=0 or "auto".'
        )
    if mixes != "auto":
        return int(mixes), None
    if rows_per_weight >= MIX_BELOW:
        return 0, f"no mixes: every masked layer's fit has >= {MIX_BELOW} rows per weight"
    samples = len(arrays[0])
    values = sum(int(np.prod(array.shape[1:])) for array in arrays)
    total = min(MIX_FACTOR * samples, MIX_VALUES // max(values, 1))
    if total <= samples:
        return 0, "no mixes: the samples are large enough to give many rows each"
    return total - samples, None


def with_mixes(arrays, count, hold_out):
    """`arrays` followed by `count` mixes  a x_i + (1 - a) x_j  (a uniform in [0, 1], same pairs for every input).

    Reconstruction holds out every `hold_out`-th sample to judge its fits; a mix
    in a held-out position is made of held-out samples only, and the others of
    the rest, so the held-out rows never share a sample with the fitted ones.
    Deterministic: the pairs depend only on the sample count.
    """
    if count == 0:
        return arrays
    samples = len(arrays[0])
    rng = np.random.default_rng(samples)
    held = np.arange(samples) % hold_out == hold_out - 1
    held_position = np.arange(samples, samples + count) % hold_out == hold_out - 1
    first, second = np.empty(count, int), np.empty(count, int)
    for where, pool in ((held_position, np.flatnonzero(held)), (~held_position, np.flatnonzero(~held))):
        pool = pool if len(pool) else np.arange(samples)
        first[where], second[where] = rng.choice(pool, (2, int(where.sum())))
    weight = rng.uniform(size=count).astype("float32")
    mixed = []
    for array in arrays:
        shape = (count,) + (1,) * (array.ndim - 1)
        mixed.append(
            np.concatenate([array, weight.reshape(shape) * array[first] + (1 - weight.reshape(shape)) * array[second]])
        )
    return mixed
