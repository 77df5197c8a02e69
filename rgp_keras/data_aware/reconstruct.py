"""Reconstruction: refit each masked layer's kept weights so the pruned model reproduces the dense one.

Layers are visited in topological order, the calibration set going through the
dense reference and the pruned model side by side, one layer call at a time.
At a masked layer, its kept weights and bias are refit by ridge least squares
so that, fed the *pruned* model's own inputs, it reproduces the *dense* layer's
pre-activation outputs on the *dense* model's inputs (which also corrects the
error accumulated upstream). Features are the input channels times the kernel
window (conv patches); every output channel of a group reads the same kept
inputs, so there is one solve per output group, and X^T X is accumulated over
chunks: memory is bounded by the feature count, not by the data. Dense layers
downstream of masked ones (the classifier) are refit the same way, and the
BatchNormalization layers downstream get moving statistics, measured on the
calibration data, under which their outputs keep the dense model's distribution.
"""

import math
import warnings

import numpy as np
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view

from rgp_keras.data_aware.calibration import MIX_BELOW
from rgp_keras.masking.layer_types import REGISTRY, layer_type
from rgp_keras.model_walk import consumers, is_rgp_wrapper, layer_calls, leaves, run_call, to_numpy

# Rows x features per chunk of the X^T X accumulation (~64 MB of float32 features).
_CHUNK_ELEMENTS = 1 << 24
# Ridge strengths tried, as fractions of the mean diagonal of X^T X (SparseGPT's fixed choice is 0.01).
_RIDGE = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
HOLD_OUT = 5  # every 5th calibration sample judges the ridge strength


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


def input_channel_energy(model, arrays, layer_ids):
    """Layer id -> mean square of each input channel over the calibration set, for the layers in `layer_ids`."""
    energy = {}
    calls = layer_calls(model)

    def visit(call, values, reference_call, reference_inputs, changed):
        if id(call.layer) in layer_ids:
            x = values[call.inputs[0]]
            mean, variance = channel_moments(x)
            energy[id(call.layer)] = variance + mean**2

    _walk(calls, None, arrays, visit)
    return energy


def reconstruct(reference, pruned, arrays, *, samples=None, progress=False):
    """Refit every masked layer of `pruned` (in place) to reproduce `reference` on `arrays`.

    Args:
        reference: the dense model `pruned` was made from (same graph, same
            channel order), not modified.
        pruned: the pruned model; its wrappers' kept weights and biases and its
            BatchNormalization moving statistics change.
        arrays: calibration inputs, one array per model input.
        samples: the first `samples` rows are real calibration samples, the
            rest mixes of them (`rgp_keras.data_aware.calibration.with_mixes`): fits short
            of rows (fewer than MIX_BELOW per weight from the samples alone) use
            every row, the others and BatchNormalization statistics the real
            ones only (a mix has less variance than a sample). Default: all real.
        progress: show a progress bar over the layer calls.

    Returns:
        wrapper id -> {"error_before", "error_after"} (relative squared error of
        the layer's pre-activation output against the dense layer on dense
        inputs), or {"reconstruction": reason} for wrappers left as they were.
    """
    reference_calls, pruned_calls = layer_calls(reference), layer_calls(pruned)
    if len(reference_calls.calls) != len(pruned_calls.calls):
        raise AssertionError("the pruned model's layer graph differs from the dense model's")
    report, few_samples = {}, []
    bar = _progress_bar(len(pruned_calls.calls)) if progress else None

    def refit(layer, inner, mask, reference_call, x_dense, x_pruned):
        if (
            samples is not None
            and len(x_pruned) > samples
            and _rows_per_weight(inner, mask, x_pruned, samples) >= MIX_BELOW
        ):
            x_dense, x_pruned = x_dense[:samples], x_pruned[:samples]  # rows enough: the mixes would only cost
        report[id(layer)] = _refit(inner, mask, reference_call.layer, x_dense, x_pruned)
        if report[id(layer)].pop("few_samples"):
            few_samples.append(inner.name)

    def visit(call, pruned_values, reference_call, reference_inputs, changed):
        layer = call.layer
        inputs = (reference_call, reference_inputs[0], pruned_values[call.inputs[0]])
        if is_rgp_wrapper(layer):
            reason = unsupported_reason(layer.layer)
            if reason:
                report[id(layer)] = {"reconstruction": f"not refit: {reason}"}
            else:
                refit(layer, layer.layer, to_numpy(layer.mask).astype(bool), *inputs)
        elif changed and not unsupported_reason(layer):
            refit(layer, layer, None, *inputs)  # a dense layer downstream of masked ones
        elif hasattr(layer, "layers"):
            for inner in leaves(layer):
                if is_rgp_wrapper(inner):
                    report[id(inner)] = {"reconstruction": f"not refit: inside nested model {layer.name!r}"}
        elif changed and layer_type(layer)[0] == "BatchNormalization":
            _reestimate(layer, pruned_values[call.inputs[0]][:samples], reference_inputs[0][:samples])
        if bar is not None:
            bar.add(1)

    _walk(pruned_calls, reference_calls, arrays, visit)
    if few_samples:
        warnings.warn(
            f"Calibration data has fewer rows than weights to fit in {len(few_samples)} layer(s) "
            f"({', '.join(few_samples[:5])}): their least-squares fits are regularised (ridge) and may "
            "generalise poorly; pass more calibration samples.",
            stacklevel=4,
        )
    return report


def _walk(calls, reference, arrays, visit):
    """Run `calls` (and `reference`, call by call beside it) on `arrays`, calling `visit` before each call.

    `visit(call, values, reference_call, reference_inputs, changed)` sees the
    values of `calls`'s tensors and, with a reference, the paired call, its
    inputs and whether this call's inputs differ from them; it may change the
    call's layer, which then runs. `visit` changes layers only where inputs
    differ, so a call whose inputs equal the reference's reuses the reference's
    outputs unless it is a wrapper (or a nested model, which may hold some).
    """
    values = dict(zip(calls.inputs, arrays))
    reference_values = dict(zip(reference.inputs, arrays)) if reference else None
    same = set(calls.inputs)  # tensors equal to the reference's
    remaining = consumers(calls)
    reference_remaining = consumers(reference) if reference else None
    paired = reference.calls if reference else [None] * len(calls.calls)
    for call, reference_call in zip(calls.calls, paired):
        reference_inputs = [reference_values[key] for key in reference_call.inputs] if reference_call else None
        visit(call, values, reference_call, reference_inputs, not all(key in same for key in call.inputs))
        if reference_call is None:
            outputs = run_call(call, values)
        else:
            reference_outputs = run_call(reference_call, reference_values)
            for key, value in zip(reference_call.outputs, reference_outputs):
                reference_values[key] = value
            unchanged = all(key in same for key in call.inputs) and not (
                is_rgp_wrapper(call.layer) or hasattr(call.layer, "layers")
            )
            outputs = reference_outputs if unchanged else run_call(call, values)
            if unchanged:
                same.update(call.outputs)
            _release(reference_values, reference_call.inputs, reference_remaining)
        values.update(zip(call.outputs, outputs))
        _release(values, call.inputs, remaining)


def _release(values, keys, remaining):
    for key in keys:
        remaining[key] -= 1
        if remaining[key] == 0:
            values.pop(key, None)


def channel_moments(x, chunk=1 << 16):
    """Per-channel (last axis) mean and variance in float64, a chunk of rows at a time (no float64 copy of `x`)."""
    rows = x.reshape(-1, x.shape[-1])
    total, squares = np.zeros(rows.shape[1]), np.zeros(rows.shape[1])
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk].astype(np.float64)
        total += part.sum(axis=0)
        squares += np.einsum("ij,ij->j", part, part)
    mean = total / len(rows)
    return mean, np.maximum(squares / len(rows) - mean**2, 0.0)


def _rows_per_weight(layer, mask, x, samples):
    """Least-squares rows per fitted weight of `layer`'s largest output group, from `samples` samples of `x`."""
    kept = (
        int(mask.reshape(-1, mask.shape[-1]).sum(axis=0).max())
        if mask is not None
        else math.prod(layer.kernel.shape[:-1])
    )
    return samples * len(kernel_rows(layer, x[:1])) / (kept + 1)


def _reestimate(layer, x_pruned, x_dense):
    """Moving statistics that map the pruned input's calibration distribution onto the dense one's.

    The dense layer normalises with its moving mean mu and std sigma; on the
    calibration data its input has mean m_d and std s_d, the pruned input m_p
    and s_p. Standardising the pruned input to (m_d, s_d) and then applying the
    dense statistics gives mean m_p - (m_d - mu) s_p / s_d and std sigma s_p / s_d,
    so the pruned layer's output has the dense one's calibration distribution.
    When the dense model's moving statistics match the calibration data, as
    they do for a trained model, these are the calibration statistics (m_p, s_p)
    themselves (up to BatchNorm's epsilon).
    """
    epsilon = float(layer.epsilon)
    (mean_p, var_p), (mean_d, var_d) = channel_moments(x_pruned), channel_moments(x_dense)
    mean, variance = to_numpy(layer.moving_mean).astype(np.float64), to_numpy(layer.moving_variance).astype(np.float64)
    ratio = np.sqrt(np.divide(var_p, var_d, out=np.ones_like(var_p), where=var_d > 0))
    layer.moving_mean.assign((mean_p - (mean_d - mean) * ratio).astype("float32"))
    layer.moving_variance.assign(np.maximum((variance + epsilon) * ratio**2 - epsilon, 0.0).astype("float32"))


def kernel_rows(layer, x):
    """Rows of inputs the layer's kernel multiplies: (positions, kernel window x input channels)."""
    if layer_type(layer)[1].layout == "dense":
        return x.reshape(-1, x.shape[-1])
    if all(k == 1 for k in layer.kernel_size) and all(s == 1 for s in layer.strides):
        return x.reshape(-1, x.shape[-1])  # a 1x1 convolution is a Dense layer over positions
    return _patches(x, layer.kernel_size, layer.strides, layer.dilation_rate, str(layer.padding))


def _patches(x, kernel_size, strides, rates, padding):
    """Every kernel window of `x` (batch, *spatial, channels) as a row ordered (window position, channel), as
    `tf.image.extract_patches` orders them; numpy, so it runs on every Keras backend."""
    rank = len(kernel_size)
    spans = [(size - 1) * rate + 1 for size, rate in zip(kernel_size, rates)]
    pads = [(0, 0)]
    for length, span, stride in zip(x.shape[1:-1], spans, strides):
        total = max((-(-length // stride) - 1) * stride + span - length, 0) if padding == "same" else 0
        pads.append((total // 2, total - total // 2))  # TensorFlow puts the odd one after
    windows = sliding_window_view(np.pad(x, pads + [(0, 0)]), spans, axis=tuple(range(1, rank + 1)))
    # (batch, *positions, channels, *span) -> strided positions, dilated taps, channels last
    windows = windows[
        (slice(None), *(slice(None, None, s) for s in strides), slice(None), *(slice(None, None, r) for r in rates))
    ]
    windows = np.moveaxis(windows, rank + 1, -1)
    return windows.reshape(-1, int(np.prod(kernel_size)) * x.shape[-1])


class _Normal:
    """Sums for least squares: X^T X, X^T Y and |Y|^2 over rows (X with a trailing 1 for the bias)."""

    def __init__(self, features, outputs):
        self.gram = np.zeros((features + 1, features + 1))
        self.cross = np.zeros((features + 1, outputs))
        self.energy = np.zeros(outputs)
        self.rows = 0

    def add(self, rows, target):
        rows = np.concatenate([rows, np.ones((len(rows), 1), rows.dtype)], axis=1)
        self.gram += rows.T @ rows
        self.cross += rows.T @ target
        self.energy += np.sum(np.square(target, dtype=np.float64), axis=0)
        self.rows += len(rows)

    def __add__(self, other):
        total = _Normal(len(self.gram) - 1, self.cross.shape[1])
        for name in ("gram", "cross", "energy", "rows"):
            setattr(total, name, getattr(self, name) + getattr(other, name))
        return total

    def error(self, weights, inputs, columns):
        """Squared error of `weights` (rows `inputs` x `columns`) on these sums."""
        gram, cross = self.gram[np.ix_(inputs, inputs)], self.cross[np.ix_(inputs, columns)]
        return float(np.sum(weights * (gram @ weights)) - 2 * np.sum(weights * cross) + np.sum(self.energy[columns]))


def _refit(inner, mask, dense, x_dense, x_pruned):
    """Refit `inner`'s kept weights (`mask`; None: all) to reproduce layer `dense` on the dense inputs.

    Every `HOLD_OUT`-th calibration sample is held out to choose the ridge
    strength per output group (among `_RIDGE`, as fractions of the mean
    diagonal of X^T X) and to report errors; the final fit uses every sample.
    Ridge pulls towards the plain RGP weights, so that a poorly determined fit
    (few samples for many features) stays close to them.
    """
    kernel = to_numpy(inner.kernel)
    mask = np.ones(kernel.shape, bool) if mask is None else mask
    outputs = kernel.shape[-1]
    dense_kernel = to_numpy(dense.kernel).reshape(-1, outputs)
    use_bias = bool(getattr(inner, "use_bias", False))
    dense_bias = to_numpy(dense.bias) if use_bias else np.zeros(outputs, np.float32)
    features = dense_kernel.shape[0]
    fit, held_out = _Normal(features, outputs), _Normal(features, outputs)
    per_sample = math.prod(x_dense.shape[1:]) * math.prod(getattr(inner, "kernel_size", (1,)))
    chunk = max(HOLD_OUT, _CHUNK_ELEMENTS // max(per_sample, 1) // HOLD_OUT * HOLD_OUT)
    for start in range(0, len(x_dense), chunk):
        index = np.arange(start, min(start + chunk, len(x_dense)))
        for part, sums in (
            (index[index % HOLD_OUT != HOLD_OUT - 1], fit),
            (index[index % HOLD_OUT == HOLD_OUT - 1], held_out),
        ):
            if len(part):
                sums.add(
                    kernel_rows(inner, x_pruned[part]), kernel_rows(inner, x_dense[part]) @ dense_kernel + dense_bias
                )
    judge = held_out if held_out.rows else fit
    total = fit + held_out
    kept = mask.reshape(-1, outputs)
    current = np.concatenate([(kernel * mask).reshape(-1, outputs), _current_bias(inner, outputs)[None]], axis=0)
    solution = current.astype(np.float64)
    columns_of = {}
    for column in range(outputs):
        columns_of.setdefault(kept[:, column].tobytes(), []).append(column)
    before = after = 0.0
    few_samples = False
    for columns in columns_of.values():
        inputs = np.flatnonzero(kept[:, columns[0]])
        if use_bias:
            inputs = np.append(inputs, features)
        few_samples |= total.rows < len(inputs)
        start = current[np.ix_(inputs, columns)]
        error_start = judge.error(start, inputs, columns)
        ridges = _RIDGE if held_out.rows else (_RIDGE[2],)
        trials = [
            (judge.error(w, inputs, columns), ridge)
            for ridge, w in _ridge_path(fit if held_out.rows else total, inputs, columns, ridges, start)
        ]
        best_error, ridge = min(trials)
        before += error_start
        if best_error < error_start:
            solution[np.ix_(inputs, columns)] = _ridge_solve(total, inputs, columns, ridge, start)
            after += best_error
        else:
            after += error_start
    energy = max(float(np.sum(judge.energy)), 1e-30)
    if after < before:
        inner.kernel.assign(solution[:features].reshape(kernel.shape).astype(kernel.dtype) * mask)
        if use_bias:
            inner.bias.assign(solution[features].astype("float32"))
    return {"error_before": before / energy, "error_after": after / energy, "few_samples": few_samples}


def _ridge_path(sums, inputs, columns, ridges, start):
    """[(ridge, argmin_w |X w - Y|^2 + lambda |w - start|^2)] for each ridge; lambda = ridge x mean diag of X^T X.

    One eigendecomposition of X^T X serves every ridge strength.
    """
    block = sums.gram[np.ix_(inputs, inputs)]
    values, vectors = scipy.linalg.eigh(block)
    values = np.maximum(values, 0.0)
    cross = vectors.T @ sums.cross[np.ix_(inputs, columns)]
    start_rotated = vectors.T @ start
    path = []
    for ridge in ridges:
        strength = _strength(block, ridge)
        path.append((ridge, vectors @ ((cross + strength * start_rotated) / (values + strength)[:, None])))
    return path


def _ridge_solve(sums, inputs, columns, ridge, start):
    """The solution of `_ridge_path` for one ridge strength, by Cholesky."""
    block = sums.gram[np.ix_(inputs, inputs)]
    strength = _strength(block, ridge)
    right = sums.cross[np.ix_(inputs, columns)] + strength * start
    block = block + strength * np.eye(len(inputs))
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
