"""Reconstruction: refit each masked layer's kept weights so the pruned model reproduces the dense one.

Layers are visited in topological order, the calibration batches going through
the dense reference and the pruned model side by side
(`rgp_keras.data_aware.stream.walk`). At a masked layer, its kept weights and bias are refit by ridge least squares
so that, fed the *pruned* model's own inputs, it reproduces the *dense* layer's
pre-activation outputs on the *dense* model's inputs (which also corrects the
error accumulated upstream). Features are the input channels times the kernel
window (conv patches); every output channel of a group reads the same kept
inputs, so there is one solve per output group, and X^T X is summed batch by
batch: memory is bounded by a batch and the feature count, not by the data. Dense layers
downstream of masked ones (the classifier) are refit the same way, and the
BatchNormalization layers downstream get moving statistics, measured on the
calibration data, under which their outputs keep the dense model's distribution.
"""

import copy
import itertools
import math
import warnings
from typing import NamedTuple

import keras
import numpy as np
import scipy.linalg
from keras import ops

from rgp_keras.data_aware.calibration import MIX_BELOW
from rgp_keras.data_aware.stream import BLAS_THREADED_FROM, Observer, blas_threads, walk
from rgp_keras.masking.layer_types import REGISTRY, layer_type
from rgp_keras.model_walk import is_rgp_wrapper, layer_calls, leaves, to_numpy

# Rows x features per chunk of the X^T X accumulation (~64 MB of float32 features).
_CHUNK_ELEMENTS = 1 << 24
# Share of the full X^T X's entries up to which each output group sums its own block (`_Sums`): a quarter; a half
# where X^T X has >= 1024 features and the groups' channel runs are >= 16 wide (their copies are cheap there).
# One-off probe here: 8/2 on a 3x3 convolution of 128 channels 1.2x, of 512 channels 1.9x faster than one X^T X;
# of 64 channels, or 32/4 on 128 (runs of 4 channels), 1.4x slower.
_GROUP_SHARE, _GROUP_SHARE_WIDE, _WIDE_FEATURES, _WIDE_RUN = 1 / 4, 1 / 2, 1024, 16
# Ridge strengths tried, as fractions of the mean diagonal of X^T X (SparseGPT's fixed choice is 0.01).
_RIDGE = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
HOLD_OUT = 5  # every 5th calibration row judges the ridge strength
# Positions over all calibration samples a depthwise refit sums per channel (a random share where there are more):
# rows enough for its window + 1 weights. MobileNetV2 224, 512 images: prune_channels(keep=0.5) 175 -> 124 s here.
_DEPTHWISE_ROWS = 1 << 18
# Elements (rows x features) from which a run of fitted samples is summed as a view, not gathered.
_VIEWED_FROM = 1 << 18


def unsupported_reason(layer):
    """Why reconstruction cannot refit `layer` (the inner layer of a wrapper), or None."""
    _, kind = layer_type(layer)
    if kind is None or not kind.refit or getattr(layer, "groups", 1) != 1:
        refit = ", ".join(name for name, other in REGISTRY.items() if other.refit)
        return f"{type(layer).__name__} (reconstruction refits {refit})"
    if getattr(layer, "data_format", "channels_last") not in ("channels_last", None):
        return "channels_first layout"
    if kind.layout != "dense" and str(layer.padding).lower() not in ("valid", "same"):
        return f"padding {layer.padding!r}"
    return None


def input_channel_energy(model, calibration, layer_ids, rows=None):
    """Layer id -> mean square of each input channel over the first `rows` calibration rows, for `layer_ids`."""
    energy = {}

    def visit(call, reference_call, changed):
        if id(call.layer) in layer_ids:
            return _Energy(energy, id(call.layer))
        return None

    walk(layer_calls(model), None, calibration, visit, rows=rows)
    return energy


def reconstruct(reference, pruned, calibration, *, progress=False, channels=None, nested=False):
    """Refit every masked layer of `pruned` (in place) to reproduce `reference` on `calibration`.

    Args:
        reference: the dense model `pruned` was made from (same graph, same
            channel order, or a subset of the channels: `channels`), not modified.
        pruned: the pruned model; its wrappers' kept weights and biases and its
            BatchNormalization moving statistics change.
        calibration: a `rgp_keras.data_aware.calibration.Calibration`: its
            samples, then their mixes if any. Fits short of rows (fewer than
            MIX_BELOW per weight from the samples alone) use every row, the
            others and BatchNormalization statistics the samples only (a mix
            has less variance than a sample).
        progress: show a progress bar over the layer calls.
        channels: tensor id of `pruned` -> the channels (indices into the
            last axis of the reference's tensor) it holds, where it holds fewer
            (the width axis); a layer writing such a tensor is refit to
            reproduce those channels of the dense layer's output.
        nested: walk into nested models (`layer_calls`), refitting their layers
            too; `channels` then names their tensors as that walk does.

    Returns:
        wrapper id -> {"error_before", "error_after"} (relative squared error of
        the layer's pre-activation output against the dense layer on dense
        inputs), or {"reconstruction": reason} for wrappers left as they were.
    """
    reference_calls, pruned_calls = layer_calls(reference, nested), layer_calls(pruned, nested)
    if len(reference_calls.calls) != len(pruned_calls.calls):
        raise AssertionError("the pruned model's layer graph differs from the dense model's")
    report, few_samples = {}, []
    refit_output = {}  # tensor id -> the _Refit of the call writing it
    channels = channels or {}
    residuals = residual_branches(pruned_calls)
    kept_statistics = set()  # BatchNormalization layers whose statistics a residual refit counted on

    def visit(call, reference_call, changed):
        layer = call.layer
        refit = None
        if is_rgp_wrapper(layer):
            reason = unsupported_reason(layer.layer)
            if reason:
                report[id(layer)] = {"reconstruction": f"not refit: {reason}"}
                return None
            refit = _Refit(layer, layer.layer, to_numpy(layer.mask).astype(bool), reference_call.layer, calibration,
                           report, few_samples, channels.get(call.outputs[0]), residuals.get(call.outputs[0]),
                           channels)
        elif changed and not unsupported_reason(layer):  # a dense layer downstream of masked ones
            refit = _Refit(layer, layer, None, reference_call.layer, calibration, report, few_samples,
                           channels.get(call.outputs[0]), residuals.get(call.outputs[0]), channels)
        elif changed and getattr(layer_type(layer)[1], "channels", None) == "kernel":
            report[id(layer)] = {"reconstruction": f"not refit: {unsupported_reason(layer)}"}
        elif hasattr(layer, "layers"):
            for inner in leaves(layer):
                if is_rgp_wrapper(inner):
                    report[id(inner)] = {"reconstruction": f"not refit: inside nested model {layer.name!r}"}
        elif changed and _DepthwiseRefit.applies(layer):
            refit = _DepthwiseRefit(layer, reference_call.layer, calibration, report, channels.get(call.outputs[0]))
        elif changed and layer_type(layer)[0] == "BatchNormalization":
            if id(layer) in kept_statistics:
                return None
            upstream = refit_output.get(call.inputs[0])
            moments = upstream.output_moments() if upstream is not None else None
            if moments is not None:
                _set_statistics(layer, *moments)  # no pass needed: the refit's sums hold them
                return None
            return _Reestimate(layer, calibration.samples, channels.get(call.inputs[0]))
        if refit is not None:
            refit_output[call.outputs[0]] = refit
            if refit.residual is not None and refit.residual.normalisation is not None:
                kept_statistics.add(id(refit.residual.normalisation))
        return refit

    bar = _progress_bar(len(pruned_calls.calls)) if progress else None
    walk(pruned_calls, reference_calls, calibration, visit, progress=bar)
    if few_samples:
        warnings.warn(
            f"Calibration data has fewer rows than weights to fit in {len(few_samples)} layer(s) "
            f"({', '.join(few_samples[:5])}): their least-squares fits are regularised (ridge) and may "
            "generalise poorly; pass more calibration samples.",
            stacklevel=4,
        )
    return report


class Residual(NamedTuple):
    """Where a layer's output reaches a residual sum: `normalisation` (a BatchNormalization layer, or None) then
    `Add` with the tensor `skip`."""

    skip: int
    normalisation: object


def residual_branches(calls):
    """Tensor id -> its `Residual`, for the tensors read by nothing but a residual `Add` of two tensors, directly
    or through a BatchNormalization of the last axis read by nothing else."""
    readers, writers = {}, {}
    for call in calls.calls:
        for key in set(call.inputs):
            readers.setdefault(key, []).append(call)
        writers.update(dict.fromkeys(call.outputs, call))
    only = lambda key: readers[key][0] if len(readers.get(key, ())) == 1 and key not in calls.outputs else None
    branches = {}
    for call in calls.calls:
        if layer_type(call.layer)[0] != "Add" or len(call.inputs) != 2 or call.inputs[0] == call.inputs[1]:
            continue
        for branch, skip in (call.inputs, call.inputs[::-1]):
            writer = writers.get(branch)
            normalisation = None
            if (writer is not None and layer_type(writer.layer)[0] == "BatchNormalization" and len(writer.inputs) == 1
                    and writer.layer.axis in (-1, len(calls.shapes[branch]) - 1)):
                normalisation, branch = writer.layer, writer.inputs[0]
                if only(writer.outputs[0]) is not call:
                    continue
            if only(branch) is (call if normalisation is None else writer):
                branches[branch] = Residual(skip, normalisation)
    return branches


class _Moments:
    """Per-channel (last axis) count, sum and sum of squares, summed batch by batch in float64 (`column_sums`)."""

    def __init__(self):
        self.count, self.first, self.second = 0, 0.0, 0.0

    def add(self, x):
        count, first, second = column_sums(x)
        self.count, self.first, self.second = self.count + count, self.first + first, self.second + second

    @property
    def mean(self):
        return self.first / max(self.count, 1)

    @property
    def variance(self):
        return np.maximum(self.second / max(self.count, 1) - self.mean**2, 0.0)


def column_sums(x):
    """(rows, sum, sum of squares) over every axis of `x` but the last, in float64: one compiled pass over a
    CPU array (numpy view of the tensor), `keras.ops` in float32 on an accelerator."""
    count = math.prod(x.shape[:-1])
    if not _on_cpu(x):
        x = ops.reshape(ops.convert_to_tensor(x, "float32"), (-1, x.shape[-1]))
        return count, _numpy64(ops.sum(x, axis=0)), _numpy64(ops.sum(ops.square(x), axis=0))
    from rgp_keras.data_aware._column_sums import column_sums as compiled

    x = np.asarray(to_numpy(x))
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return (count, *compiled(np.ascontiguousarray(x).reshape(count, x.shape[-1])))


class _Energy(Observer):
    """Mean square of each input channel (last axis), into `energy[key]`."""

    changes = False

    def __init__(self, energy, key):
        self.energy, self.key, self.moments = energy, key, _Moments()

    def add(self, start, inputs, reference_inputs, reference_outputs):
        self.moments.add(inputs[0])

    def finish(self):
        self.energy[self.key] = self.moments.second / max(self.moments.count, 1)


class _Reestimate(Observer):
    """BatchNormalization moving statistics that map the pruned input's calibration distribution onto the dense
    one's, from the samples (not the mixes).

    The dense layer normalises with its moving mean mu and std sigma; on the
    calibration data its input has mean m_d and std s_d, the pruned input m_p
    and s_p. Standardising the pruned input to (m_d, s_d) and then applying the
    dense statistics gives mean m_p - (m_d - mu) s_p / s_d and std sigma s_p / s_d,
    so the pruned layer's output has the dense one's calibration distribution.
    When the dense model's moving statistics match the calibration data, as
    they do for a trained model, these are the calibration statistics (m_p, s_p)
    themselves (up to BatchNorm's epsilon).
    """

    def __init__(self, layer, samples, channels=None):
        self.layer, self.samples, self.channels = layer, samples, channels
        self.pruned, self.dense = _Moments(), _Moments()

    def add(self, start, inputs, reference_inputs, reference_outputs):
        rows = min(len(inputs[0]), self.samples - start)
        if rows > 0:
            part = lambda x: x if rows == len(x) else x[:rows]
            self.pruned.add(part(inputs[0]))
            self.dense.add(_channels(part(reference_inputs[0]), self.channels))

    def finish(self):
        _set_statistics(self.layer, self.pruned.mean, self.pruned.variance, self.dense.mean, self.dense.variance)


def _channels(x, channels):
    """The `channels` (indices; None: all) of `x`'s last axis (with numpy on the CPU: 10x faster than the
    backend's gather there)."""
    if channels is None:
        return x
    if _on_cpu(x):
        return np.take(to_numpy(x), channels, axis=-1)
    return ops.take(x, channels, axis=-1)


def _set_statistics(layer, mean_p, var_p, mean_d, var_d):
    """Moving statistics of BatchNormalization `layer` for pruned inputs of mean and variance (`mean_p`, `var_p`)
    where the dense ones have (`mean_d`, `var_d`) (see `_Reestimate`)."""
    epsilon = float(layer.epsilon)
    mean = to_numpy(layer.moving_mean).astype(np.float64)
    variance = to_numpy(layer.moving_variance).astype(np.float64)
    ratio = np.sqrt(np.divide(var_p, var_d, out=np.ones_like(var_p), where=var_d > 0))
    layer.moving_mean.assign((mean_p - (mean_d - mean) * ratio).astype("float32"))
    layer.moving_variance.assign(np.maximum((variance + epsilon) * ratio**2 - epsilon, 0.0).astype("float32"))


def _is_linear(layer):
    """Whether `layer`'s output is its kernel's product (no activation after it)."""
    return getattr(getattr(layer, "activation", None), "__name__", "linear") == "linear"


def _numpy64(value):
    return to_numpy(value).astype(np.float64)


def transposed_product(a, b=None):
    """a^T b (b None: a^T a) in float64, computed in float32: with numpy on the CPU (its BLAS runs a^T a as a
    symmetric rank-k update, 2x faster than TensorFlow's matmul in a one-off probe here), with the Keras
    backend on an accelerator."""
    b = a if b is None else b
    if _on_cpu(a):
        a = to_numpy(a)
        with blas_threads(None if math.prod(a.shape) * b.shape[1] >= BLAS_THREADED_FROM else 1):
            return (a.T @ (a if b is a else to_numpy(b))).astype(np.float64)
    return _numpy64(ops.matmul(ops.transpose(a), b))


def _on_cpu(tensor):
    device = getattr(tensor, "device", "cpu")
    return "cpu" in str(getattr(device, "type", device)).lower()


def kernel_rows(layer, x):
    """Rows of inputs the layer's kernel multiplies: (positions, kernel window x input channels), float32; a
    numpy view of a numpy `x` where no patches are needed, else a tensor of the Keras backend (so the products
    that follow run on its device)."""
    if _pointwise(layer):
        return _matrix(x, x.shape[-1])  # a 1x1 convolution is a Dense layer over positions
    x = ops.convert_to_tensor(x, "float32")
    return _patches(x, layer.kernel_size, layer.strides, layer.dilation_rate, str(layer.padding))


def _pointwise(layer):
    """Whether `layer`'s kernel multiplies each input position alone (Dense, a 1x1 convolution of stride 1)."""
    return layer_type(layer)[1].layout == "dense" or (
        all(k == 1 for k in layer.kernel_size) and all(s == 1 for s in layer.strides))


def _matrix(x, columns):
    """`x` as float32 rows of `columns`: a numpy view of a numpy array, else a backend tensor."""
    if isinstance(x, np.ndarray):
        return x.astype(np.float32, copy=False).reshape(-1, columns)
    return ops.reshape(ops.convert_to_tensor(x, "float32"), (-1, columns))


def _patches(x, kernel_size, strides, rates, padding):
    """Every kernel window of `x` (batch, *spatial, channels) as a row ordered (window position, channel), as
    `tf.image.extract_patches` orders them, with `keras.ops` (any backend, any rank)."""
    if len(kernel_size) == 2 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # one op: 5x faster than the slices below at stride 2 (a one-off probe here)

        patches = tf.image.extract_patches(x, [1, *kernel_size, 1], [1, *strides, 1], [1, *rates, 1],
                                           padding.upper())
        return ops.reshape(patches, (-1, patches.shape[-1]))
    pads = [(0, 0)]
    outputs = []
    for length, size, stride, rate in zip(x.shape[1:-1], kernel_size, strides, rates):
        span = (size - 1) * rate + 1
        if padding == "same":
            outputs.append(-(-length // stride))
            total = max((outputs[-1] - 1) * stride + span - length, 0)
        else:
            outputs.append((length - span) // stride + 1)
            total = 0
        pads.append((total // 2, total - total // 2))  # TensorFlow puts the odd one after
    x = ops.pad(x, pads + [(0, 0)])
    taps = []
    for offset in itertools.product(*(range(size) for size in kernel_size)):
        window = tuple(
            slice(o * rate, o * rate + (count - 1) * stride + 1, stride)
            for o, rate, count, stride in zip(offset, rates, outputs, strides)
        )
        taps.append(x[(slice(None), *window)])
    return ops.reshape(ops.stack(taps, axis=-2), (-1, len(taps) * x.shape[-1]))


def add_gram(gram, rows):
    """Add X^T X of `rows`, with a trailing constant feature 1 (the bias), to `gram` (float64, features + 1
    square); returns the number of rows."""
    count, sums, _ = column_sums(rows)
    gram[:-1, :-1] += transposed_product(rows)
    gram[-1, :-1] += sums
    gram[:-1, -1] += sums
    gram[-1, -1] += count
    return count


class _Normal:
    """Sums for least squares: X^T X, X^T Y and |Y|^2 over rows (X with a trailing 1 for the bias).

    Each batch's products run in float32 (`transposed_product`); the sums over
    batches are kept in float64.
    """

    def __init__(self, features, outputs):
        self.gram = np.zeros((features + 1, features + 1))
        self.cross = np.zeros((features + 1, outputs))
        self.energy = np.zeros(outputs)
        self.rows = 0

    def add(self, rows, target):
        count = add_gram(self.gram, rows)
        self.cross[:-1] += transposed_product(rows, target)
        _, target_sums, target_squares = column_sums(target)
        self.cross[-1] += target_sums
        self.energy += target_squares
        self.rows += count

    def __add__(self, other):
        both = _Normal(len(self.gram) - 1, self.cross.shape[1])
        for name in ("gram", "cross", "energy", "rows"):
            setattr(both, name, getattr(self, name) + getattr(other, name))
        return both

    def restricted(self, inputs, columns):
        """These sums over features `inputs` (and the bias) and outputs `columns` only."""
        both = np.append(inputs, len(self.gram) - 1)
        part = _Normal(len(inputs), len(columns))
        part.gram, part.cross = self.gram[np.ix_(both, both)], self.cross[np.ix_(both, columns)]
        part.energy, part.rows = self.energy[columns], self.rows
        return part

    def errors(self, inputs, columns):
        """A function: weights (rows `inputs` x `columns`) -> their squared error on these sums."""
        gram, cross = self.gram[np.ix_(inputs, inputs)], self.cross[np.ix_(inputs, columns)]
        energy = np.sum(self.energy[columns])
        return lambda weights: float(np.sum(weights * (gram @ weights)) - 2 * np.sum(weights * cross) + energy)


class _Sums:
    """The normal-equation sums of one refit, by output group (`groups`: (kept inputs, columns) index arrays, the
    columns that read the same kept inputs), for a kernel of `window` positions.

    Each group's X^T X needs only the rows and columns of its kept inputs. Where
    the groups' blocks hold few of the full X^T X's entries (an RGP mask keeps
    k/n of the inputs per group: the blocks hold k^2/n of it; `_GROUP_SHARE`)
    and each group keeps the same channels at every window position, each group
    sums its own, from a copy of its input channels; else one full X^T X is
    summed (half of it: a symmetric product), and the groups take their blocks.
    """

    def __init__(self, groups, features, outputs, window):
        self.groups, self.window = groups, window
        self.runs = []  # per group: (runs of its kept channels, or None if they differ by window position; columns)
        for inputs, columns in groups:
            kept = np.zeros(features, bool)
            kept[inputs] = True
            kept = kept.reshape(window, -1)
            self.runs.append((_runs(np.flatnonzero(kept[0])) if (kept == kept[:1]).all() else None, _runs(columns)))
        share = sum(len(inputs) ** 2 for inputs, _ in groups) / features**2
        narrowest = min((run.stop - run.start for channels, _ in self.runs for run in channels or ()), default=0)
        self.shared = any(channels is None for channels, _ in self.runs) or share > (
            _GROUP_SHARE_WIDE if features >= _WIDE_FEATURES and narrowest >= _WIDE_RUN else _GROUP_SHARE)
        self.normals = (
            [_Normal(features, outputs)] if self.shared else [_Normal(len(i), len(c)) for i, c in groups]
        )

    def add(self, rows, target):
        if self.shared:
            self.normals[0].add(rows, target)
            return
        if _on_cpu(rows):  # numpy slices are views
            rows, target = to_numpy(rows), to_numpy(target)
        for (channels, columns), normal in zip(self.runs, self.normals):
            normal.add(_columns(rows, channels, self.window), _columns(target, columns))

    def group(self, index):
        """The sums of group `index`: over its kept inputs (then the bias) and its columns."""
        return self.normals[0].restricted(*self.groups[index]) if self.shared else self.normals[index]

    @property
    def rows(self):
        return self.normals[0].rows

    def __add__(self, other):
        both = copy.copy(self)
        both.normals = [mine + theirs for mine, theirs in zip(self.normals, other.normals)]
        return both


def _runs(index):
    """Ascending indices as slices of consecutive ones."""
    return [slice(int(run[0]), int(run[-1]) + 1) for run in np.split(index, np.flatnonzero(np.diff(index) != 1) + 1)
            if len(run)]


def _columns(x, runs, window=1):
    """The columns of rows `x` (features ordered window position, channel) in channel `runs` (slices) at every
    window position: a view where that is one run, else a copy."""
    rows = x.shape[0]
    numpy = isinstance(x, np.ndarray)
    x = x.reshape(rows, window, -1) if numpy else ops.reshape(x, (rows, window, -1))
    parts = [x[:, :, run] for run in runs]
    if len(parts) > 1:
        parts = [np.concatenate(parts, axis=2) if numpy else ops.concatenate(parts, axis=2)]
    return parts[0].reshape(rows, -1) if numpy else ops.reshape(parts[0], (rows, -1))


class _Refit(Observer):
    """Refit `inner`'s kept weights (`mask`; None: all) to reproduce layer `dense` (its output `channels` only,
    where `inner` computes fewer: None, all) on the dense inputs.

    The normal equations are summed batch by batch. Every `HOLD_OUT`-th row is
    held out to choose the ridge strength per output group (among `_RIDGE`, as
    fractions of the mean diagonal of X^T X) and to report errors; the final
    fit uses every row. Ridge pulls towards the plain RGP weights, so that a
    poorly determined fit (few rows for many features) stays close to them.
    The report goes into `report[id(layer)]`.

    Where the layer's output reaches a residual sum (`residual`, through a
    BatchNormalization y = a z + b), the target is the dense *sum*: the pruned
    layer is fit to z_d + (s_d - s_p) / a, s the sum's other input (the skip,
    whose pruned values differ from the dense ones), so the branch also makes
    up for what the skip lost; that BatchNormalization then keeps its
    statistics (the fit counted on them). `channels_of`: `channels` of every
    tensor. On benchmarks/tradeoff.py's inverted-residual net (seed 0, 512
    images; channels thinned to 0.563 / 0.466, depthwise layers refit) one-shot
    test accuracy went 85.71 -> 86.10 % / 80.07 -> 80.67 %.
    """

    def __init__(self, layer, inner, mask, dense, calibration, report, few_samples, channels=None, residual=None,
                 channels_of=None):
        self.layer, self.inner, self.calibration, self.report, self.few_samples = (
            layer, inner, calibration, report, few_samples)
        kernel = to_numpy(inner.kernel)
        self.mask = np.ones(kernel.shape, bool) if mask is None else mask
        outputs = kernel.shape[-1]
        self.dense, self.channels = dense, channels
        dense_kernel = _channels(to_numpy(dense.kernel), channels)
        self.dense_conv_kernel = ops.convert_to_tensor(dense_kernel, "float32")
        self.dense_kernel = ops.reshape(self.dense_conv_kernel, (-1, outputs))
        self.use_bias = bool(getattr(inner, "use_bias", False))
        self.dense_bias = ops.convert_to_tensor(
            _channels(to_numpy(dense.bias), channels) if self.use_bias else np.zeros(outputs), "float32")
        features = math.prod(kernel.shape[:-1])
        kept, columns_of = self.mask.reshape(-1, outputs), {}
        for column in range(outputs):
            columns_of.setdefault(kept[:, column].tobytes(), []).append(column)
        groups = [(np.flatnonzero(kept[:, columns[0]]), np.array(columns)) for columns in columns_of.values()]
        window = math.prod(self.mask.shape[:-2])
        self.fit, self.held_out = (_Sums(groups, features, outputs, window) for _ in range(2))
        self.all = None  # fit + held out, after `finish`
        self.limit = None  # rows used: every row, or the samples only when they give enough rows per weight
        self.residual = self._residual(residual, (channels_of or {}).get(residual.skip) if residual else None)

    def _residual(self, residual, skip_channels):
        """`residual` where the fit can aim at the dense sum (no activation in the way, as many channels in the skip
        as this layer writes); its skip's channels and 1 / a are kept."""
        outputs = self.dense_kernel.shape[1]
        width = outputs if skip_channels is None else len(skip_channels)
        if residual is None or not (_is_linear(self.dense) and _is_linear(self.inner)) or width != outputs:
            return None
        self.also, self.skip_channels, self.inverse_scale = (residual.skip,), skip_channels, np.ones(outputs)
        normalisation = residual.normalisation
        if normalisation is not None:
            scale = to_numpy(normalisation.gamma) if normalisation.scale else np.ones(outputs)
            scale = scale / np.sqrt(to_numpy(normalisation.moving_variance) + normalisation.epsilon)
            self.inverse_scale = np.divide(1.0, scale, out=np.zeros(outputs), where=np.abs(scale) > 1e-6)
        self.inverse_scale = self.inverse_scale.astype("float32")
        return residual

    def add(self, start, inputs, reference_inputs, reference_outputs):
        x_pruned, x_dense = inputs[0], reference_inputs[0]
        # the dense call's output is the target, unless an activation follows the kernel
        y_dense = _channels(reference_outputs[0], self.channels) if _is_linear(self.dense) else None
        if self.residual is not None:  # aim at the dense sum (see the class)
            lost = ops.subtract(_channels(reference_inputs[-1], self.skip_channels), inputs[-1])
            y_dense = ops.add(y_dense, ops.multiply(lost, self.inverse_scale))
        if self.limit is None:
            self.limit = self._rows_used(x_pruned)
        used = max(0, min(len(x_pruned), self.limit - start))
        per_sample = math.prod(x_pruned.shape[1:]) * math.prod(getattr(self.inner, "kernel_size", (1,)))
        chunk = max(1, _CHUNK_ELEMENTS // max(per_sample, 1))
        if _on_cpu(x_pruned):  # numpy views: slices and reshapes copy nothing
            x_pruned, x_dense = to_numpy(x_pruned), to_numpy(x_dense)
            y_dense = None if y_dense is None else to_numpy(y_dense)
        part = lambda x, rows: x[rows] if isinstance(x, np.ndarray) or isinstance(rows, slice) else ops.take(
            x, rows, 0)
        held = np.arange(start, start + used) % HOLD_OUT == HOLD_OUT - 1
        # the fitted samples as runs of consecutive ones (views) where the products read the inputs as they are
        # and a run gives enough elements for them, else gathered once, as the held-out ones are (patches and
        # the products cost more than the gather; the products' calls cost more than it on small runs)
        viewed = _pointwise(self.inner) and per_sample * (HOLD_OUT - 1) >= _VIEWED_FROM
        pieces = lambda index, runs: (
            [slice(first, min(first + chunk, run.stop)) for run in _runs(index)
             for first in range(run.start, run.stop, chunk)]
            if runs else [index[first : first + chunk] for first in range(0, len(index), chunk)])
        for sums, rows in [(sums, rows) for sums, index, runs in ((self.fit, np.flatnonzero(~held), viewed),
                                                                  (self.held_out, np.flatnonzero(held), False))
                           for rows in pieces(index, runs)]:
            if y_dense is None:
                target = self._pre_activation(part(x_dense, rows))
            else:
                target = _matrix(part(y_dense, rows), self.dense_kernel.shape[1])
            sums.add(kernel_rows(self.inner, part(x_pruned, rows)), target)

    def _pre_activation(self, x):
        """The dense layer's output before its activation, as rows: its own convolution where it has one."""
        if hasattr(self.dense, "convolution_op"):
            y = self.dense.convolution_op(ops.convert_to_tensor(x, "float32"), self.dense_conv_kernel)
            return ops.reshape(y, (-1, self.dense_kernel.shape[1])) + self.dense_bias
        return ops.matmul(kernel_rows(self.dense, x), self.dense_kernel) + self.dense_bias

    def _rows_used(self, x):
        """Every row; or the samples only, when they alone give MIX_BELOW least-squares rows per weight."""
        calibration = self.calibration
        if not calibration.mixes:
            return calibration.rows
        kept = int(self.mask.reshape(-1, self.mask.shape[-1]).sum(axis=0).max())
        positions = int(kernel_rows(self.inner, x[:1]).shape[0])
        enough = calibration.samples * positions / (kept + 1) >= MIX_BELOW
        return calibration.samples if enough else calibration.rows  # rows enough: the mixes would only cost

    def output_moments(self):
        """(pruned mean, pruned variance, dense mean, dense variance) per channel of the refit layer's output over
        the calibration samples, from the sums (after `finish`), or None where they do not give them: an
        activation after the kernel, or sums that include mixes (BatchNormalization statistics use samples only).
        """
        if not _is_linear(self.inner) or self.limit != self.calibration.samples:
            return None
        rows = max(self.all.rows, 1)
        kernel = (to_numpy(self.inner.kernel) * self.mask).reshape(-1, self.mask.shape[-1]).astype(np.float64)
        bias = _current_bias(self.inner, kernel.shape[1])
        mean_p, var_p, mean_d, var_d = (np.zeros(kernel.shape[1]) for _ in range(4))
        for index, (inputs, columns) in enumerate(self.all.groups):
            sums = self.all.group(index)
            weights = np.concatenate([kernel[np.ix_(inputs, columns)], bias[None, columns]])
            mean_p[columns] = sums.gram[-1] @ weights / rows
            var_p[columns] = np.sum(weights * (sums.gram @ weights), axis=0) / rows - mean_p[columns] ** 2
            mean_d[columns] = sums.cross[-1] / rows
            var_d[columns] = sums.energy / rows - mean_d[columns] ** 2
        return mean_p, np.maximum(var_p, 0.0), mean_d, np.maximum(var_d, 0.0)

    def finish(self):
        inner, mask, fit, held_out = self.inner, self.mask, self.fit, self.held_out
        total = self.all = fit + held_out
        kernel = to_numpy(inner.kernel)
        outputs = kernel.shape[-1]
        features = math.prod(mask.shape[:-1])
        judge = held_out if held_out.rows else fit
        current = np.concatenate([(kernel * mask).reshape(-1, outputs), _current_bias(inner, outputs)[None]], axis=0)
        solution = current.astype(np.float64)
        before = after = energy = 0.0
        few_samples = False
        chosen = _RIDGE.index(1e-2)  # the first group's walk starts here, each next one where the last one ended
        for index, (inputs, columns) in enumerate(total.groups):
            local = np.arange(len(inputs) + self.use_bias)  # the group's sums: its inputs, then the bias
            inputs = np.append(inputs, features) if self.use_bias else inputs
            local_columns = np.arange(len(columns))
            few_samples |= total.rows < len(inputs)
            start = current[np.ix_(inputs, columns)]
            judged = judge.group(index)
            error = judged.errors(local, local_columns)
            energy += float(np.sum(judged.energy))
            error_start = error(start)
            best = None  # the final fit on every row, where it is the one judged
            if held_out.rows:
                best_error, chosen = _best_ridge(fit.group(index), local, local_columns, start, error, chosen)
            else:
                best = _ridge_solve(total.group(index), local, local_columns, _RIDGE[chosen], start)
                best_error = error(best)
            before += error_start
            if best_error < error_start:
                if best is None:
                    best = _ridge_solve(total.group(index), local, local_columns, _RIDGE[chosen], start)
                solution[np.ix_(inputs, columns)] = best
                after += best_error
            else:
                after += error_start
        energy = max(energy, 1e-30)
        if after < before:
            inner.kernel.assign(solution[:features].reshape(kernel.shape).astype(kernel.dtype) * mask)
            if self.use_bias:
                inner.bias.assign(solution[features].astype("float32"))
        self.report[id(self.layer)] = {"error_before": before / energy, "error_after": after / energy}
        if few_samples:
            self.few_samples.append(inner.name)


class _DepthwiseRefit(Observer):
    """Refit a depthwise convolution, channel by channel, to reproduce the dense layer's outputs (its `channels`
    only, where the pruned layer computes fewer) on the dense inputs.

    Each output channel reads one input channel through its window, so its fit
    has window (+ bias) weights: one small least-squares problem per channel,
    batched. X^T X, X^T Y and |Y|^2 are summed per channel over the samples (not
    the mixes: a few weights per channel have rows enough; where the samples
    give more than `_DEPTHWISE_ROWS` positions, over a random share of them as
    large: MobileNetV2 at 224x224 has 6.4 M per channel on 512 images), with a constant
    feature last (the bias, and the means BatchNormalization statistics need);
    every `HOLD_OUT`-th sample is held out to choose each channel's ridge (or
    its current weights, where no fit does better), and the final fit uses every
    sample. On benchmarks/tradeoff.py's inverted-residual net (seed 0, 512
    images), channels thinned to 0.563 / 0.466 by prune_channels, one-shot test
    accuracy rose 85.24 -> 85.71 % / 79.54 -> 80.07 %.
    """

    residual = None  # the residual-sum target is `_Refit`'s only

    @staticmethod
    def applies(layer):
        return (layer_type(layer)[0] in ("DepthwiseConv1D", "DepthwiseConv2D")
                and layer.data_format == "channels_last" and str(layer.padding).lower() in ("valid", "same"))

    def __init__(self, layer, dense, calibration, report, channels=None):
        self.layer, self.dense, self.report, self.samples = layer, dense, report, calibration.samples
        kernel = to_numpy(layer.kernel)  # (*window, channels, multiplier)
        self.window, self.multiplier = math.prod(kernel.shape[:-2]), kernel.shape[-1]
        self.channels, self.use_bias = channels, bool(layer.use_bias)
        self.share, self.draws = None, 0  # of the positions summed (`_add`); random draws so far
        features, width = self.window + 1, kernel.shape[-2]
        self.gram = np.zeros((2, width, features, features))  # [fit, held out]
        self.cross = np.zeros((2, width, features, self.multiplier))
        self.energy = np.zeros((2, width, self.multiplier))
        self.count = np.zeros(2)

    def add(self, start, inputs, reference_inputs, reference_outputs):
        used = max(0, min(len(inputs[0]), self.samples - start))
        if not used:
            return
        held = np.arange(start, start + used) % HOLD_OUT == HOLD_OUT - 1
        target = self._target(reference_inputs[0][:used])
        x = inputs[0][:used]
        per_sample = math.prod(x.shape[1:]) * self.window
        chunk = max(1, _CHUNK_ELEMENTS // max(per_sample, 1))
        for side in (0, 1):
            index = np.flatnonzero(held == bool(side))
            for first in range(0, len(index), chunk):
                rows = index[first : first + chunk]
                self._add(side, ops.take(x, rows, 0), ops.take(target, rows, 0))

    def _target(self, x):
        """The dense layer's output before its activation (its `channels`)."""
        dense = self.dense
        y = ops.depthwise_conv(ops.convert_to_tensor(x, "float32"), dense.kernel, dense.strides, dense.padding,
                               dense.data_format, dense.dilation_rate)
        return _channels(y + dense.bias if dense.use_bias else y, self.channels)

    def _add(self, side, x, y):
        layer = self.layer
        patches = _patches(ops.convert_to_tensor(x, "float32"), layer.kernel_size, layer.strides,
                           layer.dilation_rate, str(layer.padding).lower())
        width = self.gram.shape[1]
        rows = to_numpy(patches).reshape(-1, self.window, width)
        target = to_numpy(y).astype(np.float32, copy=False).reshape(-1, width, self.multiplier)
        if self.share is None:  # the share of positions summed: _DEPTHWISE_ROWS over all the samples
            self.share = min(1.0, _DEPTHWISE_ROWS * len(x) / (self.samples * len(rows)))
        if self.share < 1:
            picked = np.random.default_rng(self.draws).random(len(rows)) < self.share
            self.draws += 1
            rows, target = rows[picked], target[picked]
        rows = np.concatenate([rows, np.ones((len(rows), 1, width), np.float32)], axis=1).transpose(2, 0, 1)
        target = target.transpose(1, 0, 2)
        self.gram[side] += rows.transpose(0, 2, 1) @ rows
        self.cross[side] += rows.transpose(0, 2, 1) @ target
        self.energy[side] += np.sum(np.square(target, dtype=np.float64), axis=1)
        self.count[side] += len(target[0])

    def _weights(self):
        """(width, features, multiplier): the current kernel, then the bias (zero without one)."""
        kernel = to_numpy(self.layer.kernel).astype(np.float64)
        width = kernel.shape[-2]
        bias = _current_bias(self.layer, width * self.multiplier).reshape(width, 1, self.multiplier)
        return np.concatenate([kernel.reshape(self.window, width, self.multiplier).transpose(1, 0, 2), bias], axis=1)

    def _error(self, side, weights):
        """Squared error per channel of `weights` on the fit's or the held-out sums."""
        gram, cross, energy = self.gram[side], self.cross[side], self.energy[side]
        return (np.einsum("cfm,cfg,cgm->c", weights, gram, weights) - 2 * np.einsum("cfm,cfm->c", weights, cross)
                + energy.sum(axis=1))

    def _solve(self, side, ridge, start):
        """The ridge solution per channel on the `side` sums (None: both), pulled towards `start`."""
        free = slice(None) if self.use_bias else slice(None, -1)
        gram = (self.gram.sum(axis=0) if side is None else self.gram[side])[:, free, free]
        cross = (self.cross.sum(axis=0) if side is None else self.cross[side])[:, free]
        strength = ridge * np.maximum(np.trace(gram, axis1=1, axis2=2) / gram.shape[1], 1e-12)
        eye = np.eye(gram.shape[1])
        solution = start.copy()
        solution[:, free] = np.linalg.solve(gram + strength[:, None, None] * eye,
                                            cross + strength[:, None, None] * start[:, free])
        return solution

    def finish(self):
        start = self._weights()
        judge = 1 if self.count[1] else 0
        errors = [self._error(judge, start)] + [self._error(judge, self._solve(0, ridge, start)) for ridge in _RIDGE]
        best = np.argmin(errors, axis=0)  # per channel: 0 keeps the current weights, else 1 + the ridge's index
        solution = start.copy()
        for choice in np.unique(best[best > 0]):
            channels = best == choice
            solution[channels] = self._solve(None, _RIDGE[choice - 1], start)[channels]
        energy = max(float(self.energy[judge].sum()), 1e-30)
        chosen = np.take_along_axis(np.stack(errors), best[None], axis=0)[0]
        self.report[id(self.layer)] = {"error_before": float(errors[0].sum()) / energy,
                                       "error_after": float(chosen.sum()) / energy}
        kernel = self.layer.kernel
        kernel.assign(solution[:, :-1].transpose(1, 0, 2).reshape(kernel.shape).astype("float32"))
        if self.use_bias:
            self.layer.bias.assign(solution[:, -1].reshape(-1).astype("float32"))
        self.solution = solution

    def output_moments(self):
        """(pruned mean, pruned variance, dense mean, dense variance) per output channel over the samples, as
        `_Refit.output_moments` gives them; None after an activation."""
        if not _is_linear(self.layer):
            return None
        gram, cross, energy = self.gram.sum(axis=0), self.cross.sum(axis=0), self.energy.sum(axis=0)
        rows = max(self.count.sum(), 1)
        weights = self.solution
        mean_p = np.einsum("cf,cfm->cm", gram[:, -1], weights) / rows
        var_p = np.einsum("cfm,cfg,cgm->cm", weights, gram, weights) / rows - mean_p**2
        mean_d = cross[:, -1] / rows
        var_d = energy / rows - mean_d**2
        flat = lambda value: value.reshape(-1)
        return flat(mean_p), flat(np.maximum(var_p, 0.0)), flat(mean_d), flat(np.maximum(var_d, 0.0))


def _best_ridge(sums, inputs, columns, start, error, first):
    """(error, index into `_RIDGE`) of the ridge solution (`_solve`; lambda = ridge x mean diagonal of X^T X)
    with the least `error` (on held-out rows), walking down the error from `_RIDGE[first]` to a minimum.

    A Cholesky factorisation per ridge tried: three where the walk starts at the minimum (trying all six took
    2.0 s of the demo's 7.8 s data-aware step, profiled). The held-out error over the ridge is a valley in all
    but 1 of the 146 groups of the README's and the demo's models (a one-off probe)."""
    block, cross = sums.gram[np.ix_(inputs, inputs)], sums.cross[np.ix_(inputs, columns)]
    errors = {}

    def at(i):
        if i not in errors:
            errors[i] = error(_solve(block, cross, _strength(block, _RIDGE[i]), start))
        return errors[i]

    best = first
    for step in (1, -1):
        while 0 <= best + step < len(_RIDGE) and at(best + step) < at(best):
            best += step
    return at(best), best


def _ridge_solve(sums, inputs, columns, ridge, start):
    """argmin_w |X w - Y|^2 + lambda |w - start|^2 over these sums; lambda = `ridge` x mean diagonal of X^T X."""
    block = sums.gram[np.ix_(inputs, inputs)]
    return _solve(block, sums.cross[np.ix_(inputs, columns)], _strength(block, ridge), start)


def _solve(block, cross, strength, start):
    """(block + strength I)^-1 (cross + strength start), by Cholesky (least squares where that fails)."""
    right = cross + strength * start
    block = block + strength * np.eye(len(block))
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(block), right)
    except scipy.linalg.LinAlgError:
        return scipy.linalg.lstsq(block, right)[0]


def _strength(block, ridge):
    """lambda: `ridge` times the mean diagonal of X^T X."""
    return ridge * max(float(np.trace(block)) / len(block), 1e-12)


def _current_bias(layer, outputs):
    if getattr(layer, "use_bias", False):
        return to_numpy(layer.bias).astype(np.float64)
    return np.zeros(outputs)


def _progress_bar(steps):
    import keras

    return keras.utils.Progbar(steps, unit_name="layer")
