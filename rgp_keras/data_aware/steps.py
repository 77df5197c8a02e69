"""Data-aware pruning, the steps `prune_regular_graph` runs around cloning: channel assignment, reconstruction.

Shared by the Keras 3 path (`rgp_keras.prune`) and the tf_keras path
(`rgp_keras.tfmot.adapter`): `plan` runs before the pruned model is built
(calibration data checked, channel permutations chosen: new weights per
layer), `finish` after it (reconstruction, per-layer reports on the wrappers).
"""

import math
from typing import NamedTuple

import numpy as np

from rgp_keras.data_aware import assign
from rgp_keras.data_aware.calibration import Calibration, check_batch_size, mix_count
from rgp_keras.data_aware.reconstruct import HOLD_OUT, input_channel_energy, reconstruct
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.masking.masks import prunable_kernel
from rgp_keras.masking.selection import layer_macs
from rgp_keras.model_walk import is_rgp_wrapper, layer_calls, leaves, to_numpy

# verbose="auto" shows a progress bar over layer calls when this many layers or more are masked.
_PROGRESS_LAYERS = 16
_ENERGY_SAMPLES = 128
# calibration_batch_size=None: as many samples as keep a batch of the model's largest activation within this.
BATCH_BYTES = 1 << 27


class Plan(NamedTuple):
    calibration_data: Calibration  # calibration samples followed by their mixes, or None
    calibration: str  # what reconstruction fits on ("512 samples + 3584 mixes of pairs"), or None
    weights: dict  # original layer id -> weights permuted by channel assignment
    assignment: dict  # original layer id -> assignment report
    assign_channels: bool
    progress: bool


def plan(model, graph, selected, *, self_loops, calibration_data, calibration_samples, calibration_mixes,
         calibration_batch_size, assign_channels, verbose):
    """Check the calibration data and choose channel permutations, before anything is built."""
    if not isinstance(assign_channels, bool):
        raise InputTypeError(f"`assign_channels` must be True or False, got {assign_channels!r}.")
    progress = progress_wanted(verbose, len(selected))
    density = (graph.degree + self_loops) / graph.nodes
    mixed, calibration = calibration_set(
        model, calibration_data, calibration_samples, calibration_mixes, calibration_batch_size,
        lambda samples: fewest_rows_per_weight(model, selected, lambda layer: density, samples))
    weights, report = {}, {}
    if assign_channels:
        # channel energies are means over samples and positions: a few hundred samples estimate them well
        energy = None
        if mixed is not None:  # on samples only, not their mixes
            energy = input_channel_energy(model, mixed, selected, rows=min(_ENERGY_SAMPLES, mixed.samples))
        weights, report = assign.assign_channels(model, graph, selected, self_loops=self_loops, input_energy=energy)
    return Plan(mixed, calibration, weights, report, assign_channels, progress)


def progress_wanted(verbose, layers):
    """Whether to show a progress bar while refitting `layers` layers, for `verbose` ("auto", 0 or 1)."""
    if verbose not in ("auto", 0, 1) or isinstance(verbose, bool):
        raise InputValueError(f'`verbose` must be "auto" (a progress bar for large models), 0 or 1, got {verbose!r}.')
    return layers >= _PROGRESS_LAYERS if verbose == "auto" else bool(verbose)


def calibration_set(model, calibration_data, calibration_samples, calibration_mixes, calibration_batch_size,
                    rows_per_weight):
    """(The checked calibration samples followed by their mixes, what the fits use: "512 samples + 0 mixes of
    pairs (...)"), or (None, None) without calibration data (then the other calibration arguments must keep their
    defaults). `rows_per_weight(samples)`: the fewest least-squares rows per fitted weight that many samples give."""
    if calibration_data is None:
        for name, value, default in (("calibration_samples", calibration_samples, None),
                                     ("calibration_mixes", calibration_mixes, "auto"),
                                     ("calibration_batch_size", calibration_batch_size, None)):
            if value != default:
                raise InputValueError(f"`{name}` needs `calibration_data`.")
        return None, None
    data = checked_calibration(model, calibration_data, calibration_samples, calibration_batch_size)
    dtypes = [tensor.dtype for tensor in model.inputs]
    count, why_none = mix_count(calibration_mixes, data.samples, data.sample_values, dtypes, _input_names(model),
                                rows_per_weight(data.samples), _macs_per_sample(model))
    description = f"{data.samples} samples + {count} mixes of pairs" + (f" ({why_none})" if why_none else "")
    return data.with_mixes(count, HOLD_OUT), description


def fewest_rows_per_weight(model, selected, density, samples):
    """The fewest least-squares rows per fitted weight among the `selected` layers (one row per sample and
    position), each fitting `density(layer)` of its kernel's inputs."""
    fewest = float("inf")
    for layer in leaves(model):
        if id(layer) not in selected:
            continue
        attribute = prunable_kernel(layer)[0]
        if attribute is None:  # a tf_keras PrunableLayer of the user's: its weights are not refit
            continue
        kernel = getattr(layer, attribute)
        try:
            positions = math.prod(layer.output.shape[1:-1])
        except (AttributeError, ValueError, TypeError):  # called more than once, or unknown sizes: count one
            positions = 1
        weights = math.prod(kernel.shape[:-1]) * density(layer) + 1
        fewest = min(fewest, samples * (positions or 1) / weights)
    return fewest


def _macs_per_sample(model):
    """Multiply-adds of one sample's forward pass (layers of unknown cost count 0)."""
    return sum(layer_macs(layer, layer)[0] or 0 for layer in leaves(model))


def checked_calibration(model, calibration_data, calibration_samples=None, calibration_batch_size=None):
    """The calibration data as a checked `Calibration` for `model` (`calibration_data` itself if it is one)."""
    if isinstance(calibration_data, Calibration):
        return calibration_data
    if calibration_batch_size is None:
        batch_size = max(1, BATCH_BYTES // (4 * _largest_activation(model)))
    else:
        batch_size = check_batch_size(calibration_batch_size)
    shapes = [tuple(tensor.shape) for tensor in model.inputs]
    return Calibration(calibration_data, shapes, _input_names(model), samples=calibration_samples,
                       batch_size=batch_size)


def _largest_activation(model):
    """Values per sample of the model's largest tensor (unknown sizes count as 1)."""
    try:
        shapes = layer_calls(model).shapes.values()
    except TypeError:
        shapes = [tuple(tensor.shape) for tensor in model.inputs]
    return max(math.prod(d or 1 for d in shape[1:]) for shape in shapes)


def _input_names(model):
    return [tensor.name.split(":")[0] for tensor in model.inputs]


def best_of(model, calibration, candidates):
    """The pruned model, among `candidates` (callables building one), whose outputs on the `calibration` samples
    are closest to `model`'s.

    The error is the relative squared error of all outputs on the calibration
    samples, the data every candidate was refit on; each wrapper's report
    says which graph won and by how much.
    """
    want = list(_outputs(model, calibration))  # model outputs: small beside the inputs
    energy = max(sum(float(np.sum(np.square(w, dtype=np.float64))) for w in want), 1e-30)
    best, errors = None, []
    for make in candidates:
        pruned = make()
        got = _outputs(pruned, calibration)
        errors.append(sum(float(np.sum(np.square(g - w, dtype=np.float64))) for g, w in zip(got, want)) / energy)
        if best is None or errors[-1] < errors[best[0]]:
            best = (len(errors) - 1, pruned)
    chosen, pruned = best
    text = f"graph {chosen + 1} of {len(errors)} candidates: output error on the calibration samples " + ", ".join(
        f"{error:.4f}" for error in errors
    )
    for layer in leaves(pruned):
        if "error_after" in (getattr(layer, "data_aware", None) or {}):
            layer.data_aware["graph_choice"] = text
    return pruned


def _outputs(model, calibration):
    """The model's outputs on the calibration samples, batch after batch (every output of a batch)."""
    for _, arrays in calibration.batches(calibration.samples):
        outputs = model.predict_on_batch(arrays if len(arrays) > 1 else arrays[0])
        yield from (to_numpy(output) for output in (outputs if isinstance(outputs, (list, tuple)) else [outputs]))


def finish(plan, reference, pruned, pairs):
    """Reconstruct `pruned` against `reference` (with calibration data) and attach the reports to the wrappers.

    `pairs` are the (original layer, pruned layer) pairs; each wrapper gets a
    `data_aware` dict that `pruning_summary` shows.
    """
    reconstruction = {}
    if plan.calibration_data is not None:
        reconstruction = reconstruct(reference, pruned, plan.calibration_data, progress=plan.progress)
    for original, new in pairs:
        report = {}
        if is_rgp_wrapper(new):
            if plan.assign_channels:
                report.update(plan.assignment.get(id(original), {"kept_order": "inside a nested model"}))
            if plan.calibration_data is not None:
                report.update(reconstruction.get(id(new), {"reconstruction": "not refit: inside a nested model"}))
        elif id(new) in reconstruction:  # a dense layer downstream of masked ones, refit too
            report.update(reconstruction[id(new)])
        if "error_after" in report:
            report["calibration"] = plan.calibration
        if report:
            new.data_aware = report
