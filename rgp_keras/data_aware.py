"""Data-aware pruning, the steps `prune_regular_graph` runs around cloning: channel assignment, reconstruction.

Shared by the Keras 3 path (`rgp_keras.prune`) and the tf_keras path
(`rgp_keras.tfmot_adapter`): `plan` runs before the pruned model is built
(calibration data checked, channel permutations chosen: new weights per
layer), `finish` after it (reconstruction, per-layer reports on the wrappers).
"""

from typing import NamedTuple

from rgp_keras import assign
from rgp_keras.calibration import calibration_arrays
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.reconstruct import input_channel_energy, reconstruct

# Show a progress bar over layer calls when this many layers or more are masked.
_PROGRESS_LAYERS = 16
_ENERGY_SAMPLES = 128


class Plan(NamedTuple):
    arrays: list  # calibration inputs, or None
    weights: dict  # original layer id -> weights permuted by channel assignment
    assignment: dict  # original layer id -> assignment report
    assign_channels: bool
    progress: bool


def plan(model, graph, selected, self_loops, calibration_data, calibration_samples, assign_channels):
    """Check the calibration data and choose channel permutations, before anything is built."""
    if not isinstance(assign_channels, bool):
        raise InputTypeError(f"`assign_channels` must be True or False, got {assign_channels!r}.")
    arrays = None
    if calibration_data is not None:
        names = [tensor.name.split(":")[0] for tensor in model.inputs]
        shapes = [tuple(tensor.shape) for tensor in model.inputs]
        arrays = calibration_arrays(calibration_data, shapes, names, calibration_samples)
    elif calibration_samples is not None:
        raise InputValueError("`calibration_samples` needs `calibration_data`.")
    weights, report = {}, {}
    if assign_channels:
        # channel energies are means over samples and positions: a few hundred samples estimate them well
        energy = input_channel_energy(model, [a[:_ENERGY_SAMPLES] for a in arrays], selected) if arrays is not None else None
        weights, report = assign.assign_channels(model, graph, selected, self_loops=self_loops, input_energy=energy)
    return Plan(arrays, weights, report, assign_channels, len(selected) >= _PROGRESS_LAYERS)


def finish(plan, reference, pruned, pairs):
    """Reconstruct `pruned` against `reference` (with calibration data) and attach the reports to the wrappers.

    `pairs` are the (original layer, pruned layer) pairs; each wrapper gets a
    `data_aware` dict that `pruning_summary` shows.
    """
    reconstruction = {}
    if plan.arrays is not None:
        reconstruction = reconstruct(reference, pruned, plan.arrays, progress=plan.progress)
    for original, new in pairs:
        report = {}
        if hasattr(new, "masked_kernel") and hasattr(new, "graph"):
            if plan.assign_channels:
                report.update(plan.assignment.get(id(original), {"kept_order": "inside a nested model"}))
            if plan.arrays is not None:
                report.update(reconstruction.get(id(new), {"reconstruction": "not refit: inside a nested model"}))
        elif id(new) in reconstruction:  # a dense layer downstream of masked ones, refit too
            report.update(reconstruction[id(new)])
        if report:
            new.data_aware = report
