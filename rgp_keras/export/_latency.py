"""The latency model that picks a compact layout per layer (fitted on x86 XNNPACK; see benchmarks/layout_choice.py)."""

import math

import numpy as np

from rgp_keras.export._groups import channel_runs, gathered_channels

# Latency estimate, fitted to single layers in LiteRT 2.3's XNNPACK on x86
# AVX2, one thread (benchmarks/layout_choice.py checks it per layer): a GEMM
# runs at full speed with >= 16 output channels per group (fewer use that
# fraction of the tile) and loses speed below ~32 reduction terms (about
# with the square root); every float a layout moves (transposes, gathers,
# partial sums) costs about 10 full-speed MACs. With more threads the GEMMs
# share out and the moves do not (LiteRT runs GATHER outside XNNPACK): a
# move costs threads x 10 MACs of one thread's time (layout_choice.py
# --threads 2 checks it). Each channel a layout's GATHER picks also costs
# about 50 MACs per call, whatever the plane it copies: negligible for a
# convolution over many positions, dominant for a Dense layer at batch 1
# (one position: a 512 -> 512 layer at n/k = 32/8 measured 1.3x dense
# where the per-float cost alone predicted 0.6x). The "slices" layout moves
# each input channel it picks once (no transposes) and costs about 20000
# MACs per slice per call (one-off probe, 3x3 convs at 14x14 and 28x28, one
# thread: 0.95x gather's latency with 16-channel groups, 1.16x with 4-channel
# groups, ~100 slices). A layer is compacted when its best layout is
# estimated below 0.9 x dense.
_TILE_CHANNELS = 16
_FULL_REDUCTION = 32
_MACS_PER_FLOAT_MOVED = 10
_MACS_PER_CHANNEL_PICKED = 50
_MACS_PER_SLICE = 20000
MAX_LATENCY_RATIO = 0.9


def estimated_latency_ratios(layer, blocks, threads=1, positions=None):
    """`{layout: estimated latency / dense latency}` of a masked layer's compact layouts.

    Per output position: GEMM MACs scaled by the share of XNNPACK's output
    tile and reduction depth they use, plus the floats each layout moves and
    its share of the per-call cost of the channels its GATHER picks.
    The GEMMs share out over `threads` CPU threads, the moves do not (LiteRT
    runs GATHER outside XNNPACK, on one thread). "scatter" is present only
    where it applies (see `compact_model`).

    `positions`: output positions per call (the batch size, 1 unless the
    model fixes it, times the spatial size: 1 for a Dense layer on vectors);
    by default read from the layer's output shape, and taken as many when
    unknown (variable sizes).
    """
    if positions is None:
        positions = output_positions(layer)
    *window, channels_in, channels_out = layer.kernel.shape
    taps, nodes = math.prod(window), len(blocks)
    fan_in, fan_out = int(blocks.sum(axis=0).max()), int(blocks.sum(axis=1).max())
    group_in, group_out = -(-channels_in // nodes), -(-channels_out // nodes)
    inputs_per_output = math.prod(getattr(layer, "strides", None) or (1,))

    def gemm(macs, width, depth):
        return macs / (min(1.0, width / _TILE_CHANNELS) * min(1.0, depth / _FULL_REDUCTION) ** 0.5)

    dense = gemm(taps * channels_in * channels_out, channels_out, taps * channels_in)
    gather = gemm(taps * nodes * fan_in * group_in * group_out, group_out, taps * fan_in * group_in)
    # channels to the front, k copies gathered, back: ~(2k + 1) floats per input channel
    moved = _MACS_PER_FLOAT_MOVED * threads
    picked = _MACS_PER_CHANNEL_PICKED * threads / positions
    ratios = {"gather": gather + moved * channels_in * (2 * fan_in + 1) * inputs_per_output
                        + picked * channels_in * fan_in}
    # slices of consecutive channels, concatenated (in XNNPACK): ~k floats per input channel, a call per slice
    slices = len(channel_runs(gathered_channels(blocks, channels_in).reshape(-1)))
    ratios["slices"] = (gather + moved * channels_in * fan_in * inputs_per_output
                        + _MACS_PER_SLICE * threads * slices / positions)
    if scatter_applies(channels_in, blocks):
        scatter = gemm(taps * nodes * fan_out * group_in * group_out, fan_out * group_out, taps * group_in)
        # k partial sums to the front, gathered, summed, back: ~(3k + 2) floats per output channel
        ratios["scatter"] = scatter + moved * channels_out * (3 * fan_in + 2) + picked * channels_out * fan_in
    return {name: float(cost / dense) for name, cost in ratios.items()}


def output_positions(layer):
    """Output positions per call: the fixed batch size (else 1) x the spatial size; inf when unknown."""
    try:
        batch, *inner = tuple(layer.output.shape[:-1])
    except (AttributeError, ValueError):  # never called, or called more than once
        return math.inf
    return math.inf if None in inner else (batch or 1) * math.prod(inner)


def scatter_applies(channels_in, blocks):
    fan_in = blocks.sum(axis=0)
    return channels_in % len(blocks) == 0 and bool(np.all(fan_in == fan_in[0]))
