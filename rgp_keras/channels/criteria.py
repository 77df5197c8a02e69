"""Which channels of a space to keep: by L1 filter norms without data; with calibration data, the channels whose
loss the consumers' least squares can best make up for.

Without data, a channel's importance is the L1 norm of the filters that write
it, summed over the coupled producers (Li et al., ICLR 2017; Torch-Pruning's
default). With data, channels are removed one small batch at a time in the
order that least raises the error the refit cannot recover: for every consumer
(a kernel layer reading the space) with inputs X (a channel is a block of
features: its kernel-window positions) and dense outputs Y = X W, dropping
channel block B from the kept features K raises min_V |X_K V - Y|^2 by
tr(V_B^T [(H^-1)_BB]^-1 V_B), with H = X^T X (damped) and V the current best
fit: Optimal Brain Surgeon over channel blocks (Frantar & Alistarh, NeurIPS
2022, do the same for structured pruning). After each removal V and H^-1 are
updated, so later choices see the compensation. A consumer too wide for its
X^T X (a Dense layer after a large Flatten) scores each channel by the output
energy it carries, E[x^2] |w|^2 (no compensation). Errors are relative to each
consumer's output energy, and summed over the consumers of a space.
"""

import math

import numpy as np
import scipy.linalg

from rgp_keras.data_aware.reconstruct import add_gram, column_sums, kernel_rows, unsupported_reason
from rgp_keras.data_aware.stream import Observer, blas_threads, walk
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.model_walk import to_numpy

# Consumers with more kernel features than this score channels by output energy (X^T X would take > 170 MB).
GREEDY_FEATURES = 4608
# Most removal steps per space (each removes the lowest-scoring channels together).
_STEPS = 32
# Damping of X^T X, as a fraction of its mean diagonal (SparseGPT's choice).
_DAMPING = 0.01
# Calibration rows of X^T X per chunk (bounded kernel-window patches).
_CHUNK_ELEMENTS = 1 << 24
# Rows summed into a consumer's X^T X: at least this many per feature (and _MIN_ROWS), every s-th row beyond (a
# ranking needs a good estimate, not every row: 64 rows a feature is SparseGPT's 128 x 2048 tokens for 4096).
_ROWS_PER_FEATURE, _MIN_ROWS = 64, 1 << 16


def l1_norms(spaces, root):
    """The L1 norm of each channel of space `root`'s filters, summed over the kernel layers writing it."""
    total = np.zeros(spaces.width(root))
    for call in spaces.producers(root):
        kernel = to_numpy(getattr(call.layer, layer_type(call.layer)[1].kernel))
        total += np.abs(kernel.astype(np.float64)).reshape(-1, kernel.shape[-1]).sum(axis=0)
    return total


def least_squares_order(spaces, roots, keep, calibration):
    """root -> its channels in the order the data-aware criterion removes them, the first `len - keep[root]`
    only (the kept ones are the rest, in any order)."""
    return {root: order for root, (order, _) in removal_curves(spaces, roots, keep, calibration).items()}


@blas_threads(1)  # the greedy's solves too, as in `walk`
def removal_curves(spaces, roots, keep, calibration):
    """root -> (its channels in the order the data-aware criterion removes them, down to `keep[root]` kept;
    the error the refit cannot recover after each removal, summed over the space's consumers, each relative
    to its output energy).

    One pass of the calibration data through the dense model measures every
    consumer's X^T X (or channel energies) at once."""
    consumers = {}
    for root in roots:
        for call in spaces.consumers(root):
            consumers.setdefault(id(call.layer), (call, []))[1].append(root)
    statistics = {}

    def visit(call, reference_call, changed):
        if id(call.layer) not in consumers:
            return None
        features = _features(call.layer)
        wide = features > GREEDY_FEATURES or unsupported_reason(call.layer) is not None
        statistics[id(call.layer)] = _Statistics(call.layer, calibration.rows, energy_only=wide)
        return statistics[id(call.layer)]

    walk(spaces.calls, None, calibration, visit)
    curves = {}
    for root in roots:
        scorers = [_scorer(spaces, call, root, statistics[id(call.layer)]) for call in spaces.consumers(root)]
        curves[root] = _greedy(spaces.width(root), spaces.width(root) - keep[root], scorers)
    return curves


def mask_residuals(calls, masks, calibration):
    """Layer id -> the error a least-squares refit of its kept weights leaves on the dense model's inputs,
    relative to its output energy, for each kernel layer of `masks` (layer id -> (layer, boolean mask of its
    kernel)). One pass of the calibration data measures every layer's X^T X."""
    statistics = {}

    def visit(call, reference_call, changed):
        if id(call.layer) not in masks:
            return None
        statistics[id(call.layer)] = _Statistics(call.layer, calibration.rows, energy_only=False)
        return statistics[id(call.layer)]

    walk(calls, None, calibration, visit)
    return {key: _mask_residual(gathered.gram / max(gathered.rows, 1), *masks[key])
            for key, gathered in statistics.items()}


def _mask_residual(gram, layer, mask):
    """min over the kept weights V of |X V - X W|^2 / |X W|^2, output columns with the same kept inputs solved
    together (the bias, the gram's last feature, always free)."""
    kernel = to_numpy(getattr(layer, layer_type(layer)[1].kernel)).astype(np.float64)
    kernel, mask = kernel.reshape(-1, kernel.shape[-1]), mask.reshape(-1, kernel.shape[-1])
    fit = np.vstack([kernel, np.zeros((1, kernel.shape[1]))])
    kept = np.vstack([mask, np.ones((1, kernel.shape[1]), bool)])
    damped = gram + _DAMPING * max(np.trace(gram[:-1, :-1]) / max(len(kernel), 1), 1e-12) * np.eye(len(gram))
    product = gram @ fit
    left = float(np.sum(fit * product))
    patterns, which = np.unique(kept.T, axis=0, return_inverse=True)
    for number, pattern in enumerate(patterns):
        columns = which.ravel() == number
        right = product[pattern][:, columns]
        left -= float(np.sum(right * scipy.linalg.solve(damped[np.ix_(pattern, pattern)], right, assume_a="pos")))
    return max(left, 0.0) / max(float(np.sum(kernel * (gram[:-1, :-1] @ kernel))), 1e-30)


def _features(layer):
    kind = layer_type(layer)[1]
    return math.prod(getattr(layer, kind.kernel).shape[:-1])


class _Statistics(Observer):
    """X^T X of a kernel layer's input rows (features: window positions x channels, then a constant 1) over
    `samples` calibration samples, every `stride`-th row where there are many more than it needs; or only each
    input channel's mean square (`energy_only`)."""

    changes = False

    def __init__(self, layer, samples, energy_only):
        self.layer, self.samples, self.energy_only = layer, samples, energy_only
        self.gram, self.second, self.rows, self.stride = None, 0.0, 0, None

    def add(self, start, inputs, reference_inputs, reference_outputs):
        x = to_numpy(inputs[0])
        if self.energy_only:
            count, _, second = column_sums(x)
            self.second, self.rows = self.second + second, self.rows + count
            return
        per_sample = math.prod(x.shape[1:]) * math.prod(getattr(self.layer, "kernel_size", (1,)))
        chunk = max(1, _CHUNK_ELEMENTS // max(per_sample, 1))
        for first in range(0, len(x), chunk):
            rows = kernel_rows(self.layer, x[first:first + chunk])
            if self.stride is None:
                wanted = max(_ROWS_PER_FEATURE * rows.shape[1], _MIN_ROWS)
                self.stride = max(1, self.samples * (rows.shape[0] // len(x[first:first + chunk])) // wanted)
            rows = rows[:: self.stride]
            if self.gram is None:
                self.gram = np.zeros((rows.shape[1] + 1, rows.shape[1] + 1))
            self.rows += add_gram(self.gram, rows)

    def finish(self):
        pass


def _scorer(spaces, call, root, statistics):
    """A consumer's scores for the channels of space `root`, from its statistics and its dense kernel."""
    kernel = to_numpy(getattr(call.layer, layer_type(call.layer)[1].kernel)).astype(np.float64)
    channels, window = kernel.shape[-2], math.prod(kernel.shape[:-2])  # the layer's input channels, window
    kernel = kernel.reshape(-1, kernel.shape[-1])
    width = spaces.width(root)
    blocks = spaces.places(call.inputs[0], root)
    if statistics.energy_only:
        energy = statistics.second / max(statistics.rows, 1)
        carried = energy * np.square(kernel).sum(axis=1).reshape(window, channels).sum(axis=0)
        return _Fixed(carried[blocks].sum(axis=1) / max(carried.sum(), 1e-30))
    features = (np.arange(window)[None, None, :] * channels + blocks[:, :, None]).reshape(width, -1)
    return _Surgeon(statistics.gram / max(statistics.rows, 1), kernel, features)


class _Fixed:
    """Scores that do not change as channels go (no compensation)."""

    def __init__(self, scores):
        self.fixed = scores

    def scores(self, channels):
        return self.fixed[channels]

    def remove(self, channels):
        pass


class _Surgeon:
    """Optimal Brain Surgeon over channel blocks of one consumer (see the module docstring)."""

    def __init__(self, gram, kernel, blocks):
        features = len(gram) - 1
        self.blocks = blocks  # (channels of the space, features per channel)
        damped = gram + _DAMPING * max(np.trace(gram[:-1, :-1]) / max(features, 1), 1e-12) * np.eye(len(gram))
        self.inverse = scipy.linalg.cho_solve(scipy.linalg.cho_factor(damped), np.eye(len(gram)))
        self.fit = np.vstack([kernel, np.zeros((1, kernel.shape[1]))])
        self.energy = max(float(np.sum(kernel * (gram[:-1, :-1] @ kernel))), 1e-30)
        self.where = np.arange(len(gram))  # feature -> its row in `inverse` and `fit` (-1: removed)

    def scores(self, channels):
        rows = self.where[self.blocks[channels]]  # (channels, block)
        block = self.inverse[rows[:, :, None], rows[:, None, :]]
        fit = self.fit[rows]
        return np.einsum("jpo,jpo->j", fit, np.linalg.solve(block, fit)) / self.energy

    def remove(self, channels):
        rows = self.where[self.blocks[channels]].ravel()
        columns = self.inverse[:, rows]
        step = np.linalg.solve(self.inverse[np.ix_(rows, rows)], np.hstack([self.fit[rows], columns.T]))
        outputs = self.fit.shape[1]
        self.fit -= columns @ step[:, :outputs]
        self.inverse -= columns @ step[:, outputs:]
        kept = np.ones(len(self.inverse), bool)
        kept[rows] = False
        self.inverse, self.fit = self.inverse[np.ix_(kept, kept)], self.fit[kept]
        removed = self.blocks[channels].ravel()
        self.where[removed] = -1
        alive = self.where >= 0
        self.where[alive] = np.arange(int(alive.sum()))


def _greedy(width, count, scorers):
    """The `count` channels (of `width`) removed first, in at most `_STEPS` steps of the lowest summed scores;
    and the summed scores of the removed channels so far, after each removal."""
    alive = np.ones(width, bool)
    order, errors = [], []
    step = max(1, -(-count // _STEPS))
    while len(order) < count:
        candidates = np.flatnonzero(alive)
        total = sum(scorer.scores(candidates) for scorer in scorers) if scorers else np.zeros(len(candidates))
        chosen = candidates[np.argsort(total, kind="stable")[: min(step, count - len(order))]]
        for scorer in scorers:
            scorer.remove(chosen)
        alive[chosen] = False
        order.extend(chosen.tolist())
        errors.extend((errors[-1] if errors else 0.0) + np.cumsum(np.sort(total)[: len(chosen)]))
    return np.array(order, np.int64), np.array(errors, np.float64)
