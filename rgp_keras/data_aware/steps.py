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
from rgp_keras.data_aware.calibration import calibration_arrays, mix_count, with_mixes
from rgp_keras.data_aware.reconstruct import HOLD_OUT, input_channel_energy, reconstruct
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.masking.masks import prunable_kernel
from rgp_keras.model_walk import is_rgp_wrapper, leaves, to_numpy

# Show a progress bar over layer calls when this many layers or more are masked.
_PROGRESS_LAYERS = 16
_ENERGY_SAMPLES = 128


class Plan(NamedTuple):
    arrays: list  # calibration inputs followed by their mixes, or None
    samples: int  # how many rows of `arrays` are real samples
    calibration: str  # what reconstruction fits on ("512 samples + 3584 mixes of pairs"), or None
    weights: dict  # original layer id -> weights permuted by channel assignment
    assignment: dict  # original layer id -> assignment report
    assign_channels: bool
    progress: bool


def plan(model, graph, selected, *, self_loops, calibration_data, calibration_samples, calibration_mixes,
         assign_channels):
    """Check the calibration data and choose channel permutations, before anything is built."""
    if not isinstance(assign_channels, bool):
        raise InputTypeError(f"`assign_channels` must be True or False, got {assign_channels!r}.")
    arrays = mixed = samples = calibration = None
    if calibration_data is not None:
        arrays = checked_arrays(model, calibration_data, calibration_samples)
        rows = _fewest_rows_per_weight(model, selected, graph, self_loops, len(arrays[0]))
        dtypes = [tensor.dtype for tensor in model.inputs]
        count, why_none = mix_count(calibration_mixes, arrays, dtypes, _input_names(model), rows)
        mixed, samples = with_mixes(arrays, count, HOLD_OUT), len(arrays[0])
        calibration = f"{samples} samples + {count} mixes of pairs" + (f" ({why_none})" if why_none else "")
    else:
        for name, value, default in (("calibration_samples", calibration_samples, None),
                                     ("calibration_mixes", calibration_mixes, "auto")):
            if value != default:
                raise InputValueError(f"`{name}` needs `calibration_data`.")
    weights, report = {}, {}
    if assign_channels:
        # channel energies are means over samples and positions: a few hundred samples estimate them well
        energy = (
            input_channel_energy(model, [a[:_ENERGY_SAMPLES] for a in arrays], selected) if arrays is not None else None
        )
        weights, report = assign.assign_channels(model, graph, selected, self_loops=self_loops, input_energy=energy)
    return Plan(mixed, samples, calibration, weights, report, assign_channels, len(selected) >= _PROGRESS_LAYERS)


def _fewest_rows_per_weight(model, selected, graph, self_loops, samples):
    """The fewest least-squares rows per fitted weight among the masked layers (one row per sample and position)."""
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
        weights = math.prod(kernel.shape[:-1]) * (graph.degree + self_loops) / graph.nodes + 1
        fewest = min(fewest, samples * (positions or 1) / weights)
    return fewest


def checked_arrays(model, calibration_data, calibration_samples):
    """The calibration data as checked float32 arrays, one per model input."""
    shapes = [tuple(tensor.shape) for tensor in model.inputs]
    return calibration_arrays(calibration_data, shapes, _input_names(model), calibration_samples)


def _input_names(model):
    return [tensor.name.split(":")[0] for tensor in model.inputs]


def best_of(model, arrays, candidates):
    """The pruned model, among `candidates` (callables building one), whose outputs on `arrays` are closest to
    `model`'s.

    The error is the relative squared error of all outputs on the calibration
    samples, the data every candidate was refit on; each wrapper's report
    says which graph won and by how much.
    """
    want = _outputs(model, arrays)
    energy = max(sum(float(np.sum(np.square(w, dtype=np.float64))) for w in want), 1e-30)
    best, errors = None, []
    for make in candidates:
        pruned = make()
        got = _outputs(pruned, arrays)
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


def _outputs(model, arrays):
    outputs = model.predict(arrays if len(arrays) > 1 else arrays[0], batch_size=256, verbose=0)
    return [to_numpy(output) for output in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def finish(plan, reference, pruned, pairs):
    """Reconstruct `pruned` against `reference` (with calibration data) and attach the reports to the wrappers.

    `pairs` are the (original layer, pruned layer) pairs; each wrapper gets a
    `data_aware` dict that `pruning_summary` shows.
    """
    reconstruction = {}
    if plan.arrays is not None:
        reconstruction = reconstruct(reference, pruned, plan.arrays, samples=plan.samples, progress=plan.progress)
    for original, new in pairs:
        report = {}
        if is_rgp_wrapper(new):
            if plan.assign_channels:
                report.update(plan.assignment.get(id(original), {"kept_order": "inside a nested model"}))
            if plan.arrays is not None:
                report.update(reconstruction.get(id(new), {"reconstruction": "not refit: inside a nested model"}))
        elif id(new) in reconstruction:  # a dense layer downstream of masked ones, refit too
            report.update(reconstruction[id(new)])
        if "error_after" in report:
            report["calibration"] = plan.calibration
        if report:
            new.data_aware = report
