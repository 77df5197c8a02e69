"""Calibration data for data-aware pruning: numpy arrays, `tf.data.Dataset`s or generators, as checked batches.

Whatever the form, `Calibration` gives the data as batches of float32 arrays
(one per model input) as many times as pruning needs to read them: arrays are
sliced (never copied whole, never modified), datasets and generators are read
once, checked batch by batch and kept in a `rgp_keras.data_aware.stream.Store`
(memory up to a budget, then a temporary folder). Everything is checked before
any layer changes; errors name what was wrong and what is accepted.

Reconstruction also fits on convex mixes of pairs of calibration samples
(mixup of the inputs only: the dense model gives the targets of any input, so no
labels are needed). A mix is a new point of the network's nonlinear feature
space, so least-squares fits that are short of rows (a Dense layer reading
hundreds of features, one row per sample) generalise better (what that kept on
MLPs: docs/data-aware.md).
Convolutions get a row per sample and position, enough already (on a CNN they
gained nothing and took much longer), and every mix costs a forward pass of the
dense and the pruned model, so "auto" mixes only when a masked layer is short of
rows and the set is small and cheap to run (a Dense classifier after a
convolutional trunk gets none), and only the fits short of rows use the mixes. Mixes follow the samples as more
batches, made when read.
"""

import copy
import itertools
import math
import numbers

import numpy as np

from rgp_keras.data_aware.stream import Store
from rgp_keras.errors import InputTypeError, InputValueError

# "auto" mixes: when a masked layer's fit has fewer than MIX_BELOW rows per weight, up to MIX_FACTOR x the
# samples in all while the set holds at most MIX_VALUES input values and its forward pass costs at most
# MIX_MACS multiply-adds (the 784-512x4-10 MLP with 512 samples: 4.9e9 with its 3584 mixes).
MIX_BELOW = 32
MIX_FACTOR = 8
MIX_VALUES = 1 << 23
MIX_MACS = 1 << 33
# Datasets and generators are read until exhausted or this many samples, so that an
# endless generator (the usual Keras training stream) does not hang the pruning.
STREAM_SAMPLES = 2048


class Calibration:
    """Checked calibration data, read as batches of float32 arrays (one per model input) as often as needed.

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
        batch_size: samples per batch (`check_batch_size`).

    `samples` is the number of samples; `mixes` the number of mixes that
    follow them (`with_mixes`), `rows` both.
    """

    def __init__(self, data, input_shapes, input_names, *, batch_size, samples=None):
        if samples is not None:
            if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
                raise InputValueError(f"`calibration_samples` must be an integer >= 1, got {samples!r}.")
        self.batch_size = check_batch_size(batch_size)
        self.shapes, self.names = [tuple(shape) for shape in input_shapes], list(input_names)
        self.mixes, self._pairs, self._store = 0, None, None
        if _is_stream(data):
            self._arrays = None
            self._read_stream(data, samples or STREAM_SAMPLES)
        else:
            arrays = _split_inputs(data, len(self.shapes), self.names, "`calibration_data`")
            arrays = [_as_array(array, name) for array, name in zip(arrays, self.names)]
            counts = {len(array) for array in arrays}
            if len(counts) != 1:
                raise InputValueError(f"Calibration inputs {self.names} have different sample counts: "
                                      f"{[len(a) for a in arrays]}.")
            if counts == {0}:
                raise InputValueError(
                    "`calibration_data` holds no samples; pass at least one (a few hundred are typical)."
                )
            self._arrays = [array[:samples] for array in arrays]
            for array, shape, name in zip(self._arrays, self.shapes, self.names):
                _check_shape(array.shape, shape, name)
            rows = self._check_rows()
            for start in range(0, len(self._arrays[0]), rows):
                for array, name in zip(self._arrays, self.names):
                    _check_finite(array[start : start + rows], name, array)
            self.samples = len(self._arrays[0])

    @property
    def rows(self):
        return self.samples + self.mixes

    @property
    def sample_values(self):
        """Input values per sample, all inputs together."""
        return sum(math.prod(d for d in shape[1:] if d is not None) for shape in self.sample_shapes)

    @property
    def sample_shapes(self):
        if self._arrays is not None:
            return [array.shape for array in self._arrays]
        return [self._store.get((0, i)).shape for i in range(len(self.shapes))]

    def batches(self, rows=None):
        """(first row, [float32 array per input]) for rows 0.. of the samples, then of their mixes; `rows`: only
        the first so many."""
        rows = self.rows if rows is None else min(rows, self.rows)
        for start in range(0, rows, self.batch_size):
            index = np.arange(start, min(start + self.batch_size, rows))
            yield start, self._take(index)

    def with_mixes(self, count, hold_out):
        """This data followed by `count` mixes  a x_i + (1 - a) x_j  (a uniform in [0, 1], same pairs for every
        input).

        Reconstruction holds out every `hold_out`-th row to judge its fits; a mix
        in a held-out position is made of held-out samples only, and the others of
        the rest, so the held-out rows never share a sample with the fitted ones.
        Deterministic: the pairs depend only on the sample count.
        """
        mixed = copy.copy(self)  # the same samples (and store), other mixes
        mixed.mixes, mixed._pairs = count, None
        if count:
            samples = self.samples
            rng = np.random.default_rng(samples)
            held = np.arange(samples) % hold_out == hold_out - 1
            held_position = np.arange(samples, samples + count) % hold_out == hold_out - 1
            first, second = np.empty(count, int), np.empty(count, int)
            for where, pool in ((held_position, np.flatnonzero(held)), (~held_position, np.flatnonzero(~held))):
                pool = pool if len(pool) else np.arange(samples)
                first[where], second[where] = rng.choice(pool, (2, int(where.sum())))
            mixed._pairs = (first, second, rng.uniform(size=count).astype("float32"))
        return mixed

    def _take(self, index):
        """float32 arrays of rows `index` (increasing): samples, then mixes."""
        real = index[index < self.samples]
        arrays = self._samples(real)
        if len(real) == len(index):
            return arrays
        first, second, weight = (part[index[len(real) :] - self.samples] for part in self._pairs)
        mixes = []
        for array, a, b in zip(arrays, self._samples(first), self._samples(second)):
            weights = weight.reshape((len(weight),) + (1,) * (array.ndim - 1))
            mixes.append(np.concatenate([array, weights * a + (1 - weights) * b]))
        return mixes

    def _samples(self, index):
        """float32 arrays of samples `index` (any order)."""
        if self._arrays is not None:
            if len(index) and np.all(np.diff(index) == 1):  # contiguous: a slice, no fancy-index copy
                return [array[index[0] : index[-1] + 1].astype("float32") for array in self._arrays]
            return [array[index].astype("float32") for array in self._arrays]
        arrays = [np.empty((len(index), *shape[1:]), "float32") for shape in self.sample_shapes]
        chunk = index // self._chunk
        for number in np.unique(chunk):
            where = chunk == number
            for i, array in enumerate(arrays):
                array[where] = self._store.get((number, i))[index[where] - number * self._chunk]
        return arrays

    def _check_rows(self):
        return max(1, (1 << 22) // max(1, self.sample_values))

    def _read_stream(self, data, limit):
        """Read a dataset or generator once, checking each batch, into a Store of chunks of `batch_size`."""
        self._store, self._chunk = Store(), self.batch_size
        buffer, count, first_shapes = [], 0, None
        for number, element in enumerate(itertools.islice(iter(data), limit)):
            if isinstance(element, tuple) and not (
                len(self.shapes) > 1 and len(element) == len(self.shapes) and _all_arrays(element)
            ):
                element = element[0]  # (x, y[, sample_weight]): labels ignored
            parts = _split_inputs(element, len(self.shapes), self.names, "A calibration batch")
            batch = [_as_array(part, name) for part, name in zip(parts, self.names)]
            batch = [array[None] if array.ndim == len(shape) - 1 else array for array, shape in zip(batch, self.shapes)]
            shapes = [array.shape[1:] for array in batch]
            if first_shapes is None:
                first_shapes = shapes
            elif shapes != first_shapes:
                raise InputValueError(
                    f"Calibration batch {number} (counting from 0) holds samples of shape "
                    f"{_listed(shapes)}, but batch 0's are {_listed(first_shapes)}; every batch must hold samples "
                    "of one shape."
                )
            if len({len(array) for array in batch}) != 1:
                raise InputValueError(f"Calibration batch {number} has different sample counts per input: "
                                      f"{[len(a) for a in batch]}.")
            for array, shape, name in zip(batch, self.shapes, self.names):
                _check_shape(array.shape, shape, name)
                _check_finite(array, name, None, f" (batch {number})")
            batch = [array[: limit - count].astype("float32") for array in batch]
            buffer.append(batch)
            count += len(batch[0])
            while sum(len(part[0]) for part in buffer) >= self._chunk:
                buffer = self._spool(buffer, count)
            if count >= limit:
                break
        if not count:
            raise InputValueError(
                "`calibration_data` yielded nothing: the dataset or generator is empty (or already exhausted); "
                "pass a numpy array, a tf.data.Dataset or a generator of input batches."
            )
        if buffer and sum(len(part[0]) for part in buffer):
            self._spool(buffer, count, last=True)
        self.samples = count

    def _spool(self, buffer, count, last=False):
        """Store one chunk of `batch_size` samples (or the rest, `last`) from `buffer`; return what is left."""
        columns = [np.concatenate(column) for column in zip(*buffer)]
        size = len(columns[0]) if last else self._chunk
        number = (count - sum(len(part[0]) for part in buffer)) // self._chunk
        for i, column in enumerate(columns):
            self._store.put((number, i), column[:size])
        return [[column[size:] for column in columns]] if size < len(columns[0]) else []


def check_batch_size(batch_size):
    """`calibration_batch_size`, checked: an integer >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputValueError(
            f"`calibration_batch_size` must be an integer >= 1 (samples run together), got {batch_size!r}."
        )
    return int(batch_size)


def _listed(shapes):
    return ", ".join(str(tuple(shape)) for shape in shapes)


def _is_stream(data):
    if isinstance(data, (np.ndarray, list, tuple, dict)) or hasattr(data, "__array__"):
        return False
    return hasattr(data, "__iter__") or hasattr(data, "__next__")


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


def _check_shape(got, shape, name):
    expected = tuple(shape[1:])
    if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(expected, got[1:])):
        raise InputValueError(
            f"Calibration data for input {name!r} has shape {tuple(got)}, but the model takes "
            f"(samples, {', '.join('any' if d is None else str(d) for d in expected)})."
        )


def _check_finite(part, name, whole=None, where=""):
    """Refuse NaN or infinite values in `part` (of `whole`, counted there when given)."""
    if np.issubdtype(part.dtype, np.floating) and not np.all(np.isfinite(part)):
        bad = int(np.sum(~np.isfinite(whole if whole is not None else part)))
        raise InputValueError(
            f"Calibration data for input {name!r}{where} holds {bad} NaN or infinite values; pass finite inputs."
        )


def mix_count(mixes, samples, sample_values, input_dtypes, input_names, rows_per_weight=0.0, sample_macs=0):
    """How many mixes `mixes` ("auto" or an integer >= 0) adds to `samples` samples of `sample_values` input
    values each, whose forward pass costs `sample_macs` MACs each, and why none when "auto" gives 0.

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
    total = min(MIX_FACTOR * samples, MIX_VALUES // max(sample_values, 1))
    if total <= samples:
        return 0, "no mixes: the samples are large enough to give many rows each"
    total = min(total, MIX_MACS // max(sample_macs, 1))
    if total <= samples:
        return 0, f"no mixes: a forward pass costs {sample_macs / 1e6:.0f} M MACs a sample, too many to add mixes"
    return total - samples, None
