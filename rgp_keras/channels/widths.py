"""How many channels each space keeps: one fraction for all, or per space the widths that cost the least accuracy
under a budget (the model's MACs for `prune_channels(macs=...)`, its LiteRT latency for `prune_for_latency`).

A search (`WidthSearch`) walks from the dense widths, each step narrowing the
space (or, in the planner, masking the layer) that adds the least error per
unit of budget saved, the error being the least-squares removal curve of each
space (`criteria.removal_curves`). That summed error ranks whole plans poorly
(benchmarks/planner_proxy.py: it overstates thinning the middle layers, whose
loss later refits recover), so it only proposes: three whole plans are made
(`PLANS`: the search's, one width for all, halfway between the two), each is
applied and refit, and the one whose outputs stay nearest the dense model's on
the calibration samples (`output_error`) is kept.
"""

import math
from typing import NamedTuple

import keras
import numpy as np

from rgp_keras.errors import InputValueError
from rgp_keras.masking.selection import layer_macs
from rgp_keras.model_walk import leaves

# Widths a space may keep in a search (fractions of its channels).
CANDIDATE_WIDTHS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.1875, 0.125)
# The whole plans made and judged by the model's output error (`plan_makers`).
PLANS = ("least summed error", "one width for all", "halfway")


def removal_orders_and_errors(curves):
    """(root -> its channels in removal order, root -> the error after each removal, 0 first) of
    `criteria.removal_curves`' result: a search's `curves`."""
    return ({root: removed for root, (removed, _) in curves.items()},
            {root: np.concatenate([[0.0], errors]) for root, (_, errors) in curves.items()})


def candidate_counts(width, tile=None):
    """The channel counts a space of `width` channels may keep in a search: the `CANDIDATE_WIDTHS` of it, and with
    a `tile` every multiple of it between them instead of the fractions over it (a cost model that charges whole
    tiles is then walked tile by tile)."""
    counts = {max(1, int(round(fraction * width))) for fraction in CANDIDATE_WIDTHS}
    if tile is None:
        return sorted(counts)
    fewest = min(counts)
    return sorted({count for count in counts if count <= tile} | {width}
                  | {count for count in range(tile, width, tile) if count >= fewest})


def charged_counts(spaces, counts, tile):
    """`counts` as a cost model with `tile` charges them: each count over the tile raised to the next multiple of
    it (at most the space's width), the channels a layer computes in the time it takes; without a tile, as
    given."""
    if tile is None:
        return counts
    return {root: min(spaces.width(root), -(-count // tile) * tile) if count > tile else count
            for root, count in counts.items()}


def counts_at(spaces, free, fraction):
    """root -> the channels kept when each free space keeps `fraction` of them (at least one)."""
    return {root: max(1, int(round(fraction * spaces.width(root)))) for root in free}


def uniform_counts_for_macs(costs, spaces, free, target):
    """Channels kept per space: one fraction for all, the largest whose model keeps at most `target` of its MACs
    (`costs`: its `MacCosts`)."""
    fewest = costs.total({root: 1 for root in free}) / max(costs.dense, 1)
    if target < fewest:
        raise InputValueError(
            f"`macs` {target} is below what this model can reach: with one channel left in every prunable space, "
            f"the layers that keep their width still hold {fewest:.4f} of the MACs; pass macs >= {fewest:.4f}."
        )
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if costs.total(counts_at(spaces, free, middle)) <= target * costs.dense:
            low = middle
        else:
            high = middle
    return counts_at(spaces, free, low if costs.total(counts_at(spaces, free, high)) > target * costs.dense else high)


def mac_terms(model, spaces):
    """[(MACs per sample, tensor id whose width scales them, another or None)] of every layer with multiply-adds:
    a kernel's scale with its input and output widths, a depthwise kernel's with its input's."""
    terms, counted = [], set()
    for call, role in zip(spaces.calls.calls, spaces.roles):
        macs, kernel_macs = layer_macs(call.layer, call.layer) if role not in (None, "alias") else (None, None)
        counted.add(id(call.layer))
        if not macs:
            continue
        if role == "kernel":  # a separable convolution's depthwise part scales with its input only
            terms += [(kernel_macs, call.inputs[0], call.outputs[0]), (macs - kernel_macs, call.inputs[0], None)]
        elif role == "channelwise":
            terms.append((macs, call.inputs[0], None))
        else:
            terms.append((macs, None, None))
    for layer in leaves(model):  # inside nested models: their widths do not change
        if id(layer) not in counted:
            terms.append((layer_macs(layer, layer)[0] or 0, None, None))
    return terms


def kept_share(spaces, key, counts):
    """The share of tensor `key`'s channels kept when each space keeps `counts[root]` (others all)."""
    if key is None:
        return 1.0
    layout = spaces.layouts[key]
    whole = sum(segment.width for segment in layout)
    return sum(counts.get(spaces.find(segment.space), segment.width) for segment in layout) / max(whole, 1)


class MacCosts:
    """The cost model of a search in MACs per sample: one term per layer with multiply-adds (`mac_terms`), each
    scaled by the kept shares of the tensors it reads and writes. A cost model gives `fixed` (a cost no width
    changes), per term `cost(index, counts)` and the spaces it touches (`roots`), per space the terms it
    touches (`affected`), and `tile`: the channels it charges at a time (`charged_counts`; MACs: None)."""

    fixed, tile = 0.0, None

    def __init__(self, model, spaces, free):
        self.spaces, self.terms = spaces, mac_terms(model, spaces)
        touched = lambda key: set() if key is None else {spaces.find(segment.space) for segment in spaces.layouts[key]}
        self.roots = [touched(key) | touched(other) for _, key, other in self.terms]
        self.affected = {root: [index for index, roots in enumerate(self.roots) if root in roots] for root in free}
        self.dense = sum(macs for macs, _, _ in self.terms)

    def cost(self, index, counts):
        macs, key, other = self.terms[index]
        return macs * kept_share(self.spaces, key, counts) * kept_share(self.spaces, other, counts)

    def total(self, counts):
        return self.fixed + sum(self.cost(index, counts) for index in range(len(self.terms)))


class MaskOption(NamedTuple):
    """RGP as an option of a search: `graph` (None: no RGP), and per term index of a layer it may mask, the
    masked term's cost, the masked layer's relative output error after the refit, and the layer's name."""

    graph: object
    costs: dict
    errors: dict
    names: dict


NO_MASKS = MaskOption(None, {}, {}, {})


class WidthSearch:
    """root -> channels kept (`counts`) and the terms to mask (`masked`): from the dense widths, the step (a space
    to a narrower candidate, or a layer masked by `option`'s graph while its spaces keep their width) of least
    added error per unit of cost saved, until the `model`'s cost (a cost model: `MacCosts`, the planner's
    latencies) meets `budget` (or no step saves any); then, while the budget allows, the width steps back that
    remove the most error per cost added (a last large step may have saved more than needed). `error`: the
    plan's summed error; `term_costs`: its cost per term.

    With a `shape` (root -> a fraction) instead: the terms `masked` masked, the spaces they touch at their
    width and every other space at one scale times its fraction of its width, the largest scale that meets
    `budget` (counts within what `curves` covers); with `fill`, then the width steps back while the budget
    allows, as above (the scale moves every space at once, and the last step may leave much of the budget).

    `curves`: root -> the error after each channel removed (0 first, `criteria.removal_curves`)."""

    def __init__(self, spaces, free, curves, model, option, budget, shape=None, masked=(), fill=False):
        self.spaces, self.free, self.curves, self.model, self.option = spaces, free, curves, model, option
        self.counts = {root: spaces.width(root) for root in free}
        self.masked = set(masked)
        self.candidates = {root: candidate_counts(spaces.width(root), model.tile) for root in free}
        if shape is None:
            self._greedy(budget)
        else:
            self._scaled(shape, budget)
        if shape is None or fill:
            self._widen(budget)
        # the channels the cost model charges for (a latency model: whole tiles of a GEMM) are kept, at no cost
        self.counts = charged_counts(spaces, self.counts, model.tile)
        self.term_costs = [option.costs[index] if index in self.masked else model.cost(index, self.counts)
                           for index in range(len(model.roots))]
        self.error = sum(float(curves[root][spaces.width(root) - count]) for root, count in self.counts.items())
        self.error += sum(option.errors[index] for index in self.masked)

    def _greedy(self, budget):
        model = self.model
        self.term_costs = [model.cost(index, self.counts) for index in range(len(model.roots))]
        while model.fixed + sum(self.term_costs) > budget:
            steps = [(error / -added, move) for move, added, error in self._steps(narrower=True) if added < -1e-12]
            if not steps:
                break
            self._take(min(steps, key=lambda step: step[0])[1])

    def _widen(self, budget):
        """The width steps that remove the most error per cost added, while the budget allows."""
        model = self.model
        while True:
            slack = budget - model.fixed - sum(self.term_costs)
            steps = [(error / added, move) for move, added, error in self._steps(narrower=False)
                     if 1e-12 < added <= slack and error < 0]
            if not steps:
                break
            self._take(min(steps, key=lambda step: step[0])[1])

    def _scaled(self, shape, budget):
        held = {root for index in self.masked for root in self.model.roots[index]}

        def counts(scale):
            found = dict(self.counts)
            for root in self.free:
                if root not in held:
                    width = self.spaces.width(root)
                    fewest = width - (len(self.curves[root]) - 1)
                    found[root] = min(width, max(fewest, int(round(scale * shape[root] * width))))
            return found

        def term_costs(found):
            return [self.option.costs[index] if index in self.masked else self.model.cost(index, found)
                    for index in range(len(self.model.roots))]

        low, high = 0.0, 1.0 / min(shape.values(), default=1.0)
        for _ in range(30):  # bisection: the cost grows with the scale
            middle = (low + high) / 2
            fits = self.model.fixed + sum(term_costs(counts(middle))) <= budget
            low, high = (middle, high) if fits else (low, middle)
        self.counts = counts(low)
        self.term_costs = term_costs(self.counts)

    @property
    def masked_names(self):
        return [self.option.names[index] for index in sorted(self.masked)]

    def _steps(self, narrower):
        """(move, cost it adds, error it adds) of every width step (narrower or wider) and, narrowing, every
        mask."""
        for root in self.free:
            if any(root in self.model.roots[index] for index in self.masked):
                continue
            for count in self.candidates[root]:
                if (count < self.counts[root]) if narrower else (count > self.counts[root]):
                    yield (root, count), *self._width_step(root, count)
        if narrower:
            for index, cost in self.option.costs.items():
                if index not in self.masked and all(self.counts.get(root, 0) == self.spaces.width(root)
                                                    for root in self.model.roots[index] if root in self.counts):
                    yield ("mask", index), cost - self.term_costs[index], self.option.errors[index]

    def _width_step(self, root, count):
        trial, width = {**self.counts, root: count}, self.spaces.width(root)
        added = sum(self.model.cost(index, trial) - self.term_costs[index] for index in self.model.affected[root])
        return added, self.curves[root][width - count] - self.curves[root][width - self.counts[root]]

    def _take(self, move):
        if move[0] == "mask":
            self.masked.add(move[1])
            self.term_costs[move[1]] = self.option.costs[move[1]]
            return
        root, count = move
        self.counts[root] = count
        for index in self.model.affected[root]:
            self.term_costs[index] = self.model.cost(index, self.counts)


def plan_makers(spaces, free, curves, model, options, budget):
    """Plan name (`PLANS`) -> a function of a budget making that whole plan (a `WidthSearch`): the search's with
    the option (`options[0]`: no masks; the planner's RGP graphs) whose plan has the least summed error at
    `budget`; one width for all (no masks); halfway between the two (each space's fraction the geometric mean
    of theirs, scaled to the budget, what the scale leaves of it filled by the search's steps back)."""
    greedy = min((WidthSearch(spaces, free, curves, model, option, budget) for option in options),
                 key=lambda search: search.error)
    halfway = {root: math.sqrt(greedy.counts[root] / spaces.width(root)) for root in free}
    return {
        "least summed error": lambda given: WidthSearch(spaces, free, curves, model, greedy.option, given),
        "one width for all": lambda given: WidthSearch(spaces, free, curves, model, options[0], given,
                                                       shape=dict.fromkeys(free, 1.0)),
        "halfway": lambda given: WidthSearch(spaces, free, curves, model, greedy.option, given, shape=halfway,
                                             masked=greedy.masked, fill=True),
    }


def output_error(reference, pruned, calibration):
    """The relative squared error of `pruned`'s outputs against `reference`'s, sum ||f_pruned(x) - f_ref(x)||^2 /
    sum ||f_ref(x)||^2 over the calibration samples (not their mixes), averaged over the model's outputs.

    Every sample counts, also those the refits fitted on: the fifth they hold out (~100 of 512) ranked whole
    plans by noise. In one-off probes on the benchmark CNN and IRN (5 targets, three plans each), the error
    over all 512 samples ranked the plan that tested best first in 5 of 5, the held-out fifth in 3 of 5; the
    error on 2000 other images ranked them as the 512 did."""
    squared, energy = 0.0, 0.0  # per output, once the first batch has set their number
    for _, arrays in calibration.batches(calibration.samples):
        inputs = arrays[0] if len(arrays) == 1 else list(arrays)
        want, got = ([keras.ops.convert_to_numpy(tensor).astype(np.float64)
                      for tensor in keras.tree.flatten(model(inputs, training=False))] for model in (reference, pruned))
        squared = squared + np.array([np.sum((b - a) ** 2) for a, b in zip(want, got)])
        energy = energy + np.array([np.sum(a**2) for a in want])
    return float(np.mean(squared / np.maximum(energy, 1e-30)))
