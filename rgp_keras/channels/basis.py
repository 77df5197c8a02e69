"""Linear bottlenecks turned to the basis their readers need before their channels are chosen.

A channel space on which only linear maps act - kernel layers without an
activation write it (each perhaps followed by its own BatchNormalization),
residual sums join it, average pooling, padding and dropout carry it, kernel
layers read it, as in the linear bottlenecks of MobileNetV2/V3 and
EfficientNet - holds the same information in any basis: with an invertible Q,
the producers may write s Q and the readers read (s Q) Q^-1 = s, and the model
computes the same function. Keeping k of its channels then keeps a k-dimensional
subspace; choosing it among every subspace, not only among the coordinate axes,
keeps more of what the readers need (a reduced-rank regression).

The basis is the generalised eigenvectors of M v = lambda G v, with
M = sum_c C_c A_c C_c / e_c and G = sum_c C_c / tr(C_c) over the readers c,
C_c the covariance of the space's channels at reader c's input, A_c = sum over
its kernel window (and positions after a Flatten) of K K^T and e_c = tr(C_c A_c)
its output energy: for one reader (C_c = G), the first k eigenvectors span the
k-dimensional subspace from which least squares best recovers that reader's
output, for every k at once. The channels of the turned space are then chosen
and refit as any others (`criteria`, `reconstruct`). On benchmarks/tradeoff.py's
inverted-residual net (512 calibration images, seeds 0 / 1, one width for all,
one-shot), 0.563 of the channels: 86.10 -> 87.64 % / 85.74 -> 87.36 %; 0.466:
80.67 -> 82.06 % / 80.41 -> 82.60 % (dense 92.55 / 91.98 %).
"""

from typing import NamedTuple

import numpy as np
import scipy.linalg

from rgp_keras.data_aware.stream import Observer, blas_threads, walk
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.model_walk import clone_model, paired_leaves, to_numpy

# Channel-wise layers that act on every channel alike and linearly: they commute with a change of basis.
_LINEAR_CHANNELWISE = frozenset((
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "Identity", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Reshape",
))
_LINEAR_MERGES = frozenset(("Add", "Subtract", "Average"))
# Damping of G, as a fraction of its mean diagonal (a space with dead channels has a singular covariance).
_DAMPING = 1e-6


class _Linear(NamedTuple):
    """A linear space's producers (kernel calls, each with the call of the BatchNormalization right after it or
    None) and readers (kernel calls)."""

    producers: list
    readers: list


def linear_spaces(spaces, roots):
    """root -> its `_Linear`, for the spaces of `roots` on which only linear maps act (see the module)."""
    readers_of = {}
    for call in spaces.calls.calls:
        for key in call.inputs:
            readers_of.setdefault(key, []).append(call)
    found = {}
    for root in roots:
        linear = _linear(spaces, root, readers_of)
        if linear is not None:
            found[root] = linear
    return found


def _linear(spaces, root, readers_of):
    producers, readers, normalised = [], [], {}
    holds = lambda keys: any(spaces.find(segment.space) == root for key in keys for segment in spaces.layouts[key])
    for call, role in zip(spaces.calls.calls, spaces.roles):
        reads, writes = holds(call.inputs), holds(call.outputs)
        if not (reads or writes):
            continue
        name, kind = layer_type(call.layer)
        if role == "kernel":
            if writes and not _no_activation(call.layer):
                return None
            if reads and kind.reads != ("kernel",):  # a separable convolution reads through its depthwise kernel
                return None
            (producers if writes else readers).append(call)
        elif role == "channelwise" and name == "BatchNormalization":
            normalised[call.inputs[0]] = call
        elif role == "channelwise":
            if name not in _LINEAR_CHANNELWISE and not (name == "Activation" and _no_activation(call.layer)):
                return None
        elif role == "merge":
            if name not in _LINEAR_MERGES:
                return None
        elif role not in ("concat", "flatten", "alias"):
            return None
    pairs = []
    for producer in producers:
        normalisation = normalised.pop(producer.outputs[0], None)
        if normalisation is not None and (len(readers_of.get(producer.outputs[0], ())) != 1
                                          or not (normalisation.layer.scale and normalisation.layer.center)):
            return None  # its output is also read unnormalised, or the layer cannot take any scale and shift
        pairs.append((producer, normalisation))
    if normalised or not readers or not pairs:  # a BatchNormalization not right after a producer acts on each
        return None  # channel apart; a space nobody writes (a model input) cannot be written turned
    return _Linear(pairs, readers)


def _no_activation(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


@blas_threads(1)  # as in `walk`
def principal_basis(model, spaces, roots, calibration):
    """(A copy of `model` whose linear spaces among `roots` (spaces it may change) are turned to their principal
    basis (see the module), the roots turned), or (`model`, []) where none is linear. The copy computes `model`'s
    function; its channel spaces are `spaces`' (same roots). One pass of the calibration samples measures the
    covariances."""
    linear = linear_spaces(spaces, roots)
    if not linear:
        return model, []
    moments = {}  # (call id, root) -> the `_Moments` of that space at that call's input

    def visit(call, reference_call, changed):
        observers = []
        for root, space in linear.items():
            if any(call is reader for reader in space.readers):
                observers.append(_Moments(spaces.places(call.inputs[0], root)))
            elif any(call is normalisation for _, normalisation in space.producers):
                observers.append(_Moments(np.arange(spaces.width(root))[:, None]))
            else:
                continue
            moments[id(call), root] = observers[-1]
        return _Together(observers) if observers else None

    walk(spaces.calls, None, calibration, visit, rows=calibration.samples)
    turned = clone_model(model, None)
    copies = {}
    for original, copy in paired_leaves(model, turned):
        copy.set_weights(original.get_weights())
        copies[id(original)] = copy
    for root, space in linear.items():
        basis = _basis(spaces, root, space, moments)
        inverse = np.linalg.inv(basis)
        for producer, normalisation in space.producers:
            _turn_producer(copies[id(producer.layer)], basis,
                           None if normalisation is None else copies[id(normalisation.layer)],
                           None if normalisation is None else moments[id(normalisation), root])
        for reader in space.readers:
            _turn_reader(copies[id(reader.layer)], inverse, moments[id(reader), root].places)
    return turned, sorted(linear)


def _basis(spaces, root, space, moments):
    width = spaces.width(root)
    needed, spread = np.zeros((width, width)), np.zeros((width, width))
    for reader in space.readers:
        measured = moments[id(reader), root]
        covariance = measured.covariance()
        kernel = to_numpy(reader.layer.kernel).astype(np.float64)
        kernel = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])  # (window, input channels, outputs)
        weights = sum(part @ part.T for part in kernel[:, measured.places.T].reshape(-1, width, kernel.shape[-1]))
        energy = float(np.trace(covariance @ weights))
        if energy > 0:
            needed += covariance @ weights @ covariance / energy
        spread += covariance / max(float(np.trace(covariance)), 1e-30)
    spread += _DAMPING * max(float(np.trace(spread)) / width, 1e-12) * np.eye(width)
    _, vectors = scipy.linalg.eigh(needed, spread)
    return vectors[:, ::-1]  # the most needed direction first


def _turn_producer(layer, basis, normalisation, moments):
    """`layer` (and the BatchNormalization after it) write s Q where they wrote s; with BatchNormalization
    (y = a z + b), the kernel writes z' = (a z) Q and the layer, given the statistics of z', adds b Q."""
    kind = layer_type(layer)[1]
    kernel = getattr(layer, kind.kernel)
    scale = np.ones(basis.shape[0])
    shift = None
    if normalisation is not None:
        gamma, beta, mean, variance = (to_numpy(weight).astype(np.float64) for weight in (
            normalisation.gamma, normalisation.beta, normalisation.moving_mean, normalisation.moving_variance))
        scale = gamma / np.sqrt(variance + normalisation.epsilon)
        shift = beta - mean * scale
    kernel.assign((to_numpy(kernel).astype(np.float64) * scale @ basis).astype(kernel.dtype))
    if getattr(layer, "use_bias", False):
        layer.bias.assign(((to_numpy(layer.bias).astype(np.float64) * scale) @ basis).astype(layer.bias.dtype))
    if normalisation is None:
        return
    turn = scale[:, None] * basis  # z' = z (diag(a) Q)
    mean = moments.mean() @ turn
    variance = np.maximum(np.einsum("ij,ik,kj->j", turn, moments.covariance(), turn), 0.0)
    for weight, value in ((normalisation.moving_mean, mean), (normalisation.moving_variance, variance),
                          (normalisation.gamma, np.sqrt(variance + normalisation.epsilon)),
                          (normalisation.beta, mean + shift @ basis)):
        weight.assign(value.astype(weight.dtype))


def _turn_reader(layer, inverse, places):
    """`layer` reads s Q at `places` of its input channels (axis -2 of its kernel) as it read s."""
    kernel = layer.kernel
    value = to_numpy(kernel).astype(np.float64)
    for channels in places.T:
        value[..., channels, :] = np.einsum("ij,...jo->...io", inverse, value[..., channels, :])
    kernel.assign(value.astype(kernel.dtype))


class _Together(Observer):
    """Several observers of one call (a reader of several turned spaces)."""

    changes = False

    def __init__(self, observers):
        self.observers = observers

    def add(self, start, inputs, reference_inputs, reference_outputs):
        for observer in self.observers:
            observer.add(start, inputs, reference_inputs, reference_outputs)

    def finish(self):
        pass


class _Moments(Observer):
    """Mean and covariance of the channels at `places` ((channels, places): each place's channels a row) of a
    call's input, over every position and place."""

    changes = False

    def __init__(self, places):
        self.places = places
        width = places.shape[0]
        self.count, self.sum, self.product = 0, np.zeros(width), np.zeros((width, width))

    def add(self, start, inputs, reference_inputs, reference_outputs):
        x = np.asarray(to_numpy(inputs[0]), np.float32)
        x = x.reshape(-1, x.shape[-1])[:, self.places]  # (rows, channels, places)
        x = np.moveaxis(x, 2, 1).reshape(-1, self.places.shape[0]).astype(np.float64)
        self.count += len(x)
        self.sum += x.sum(axis=0)
        self.product += x.T @ x

    def finish(self):
        pass

    def mean(self):
        return self.sum / max(self.count, 1)

    def covariance(self):
        mean = self.mean()
        return self.product / max(self.count, 1) - np.outer(mean, mean)

