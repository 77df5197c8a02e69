"""LiteRT (.tflite) export of RGP models: compact kernels that hold and compute only the kept weights.

A masked layer's kernel is zero outside the (input group, output group) blocks
of its graph: every output group reads k input groups and every input group
feeds k output groups. Three exactly equivalent compact layouts hold k/n of the
weights and run k/n of the MACs:

- "gather": gather, for each output group, the input channels of its k
  neighbour groups (one GATHER), then one grouped convolution with
  `groups = n` (per group k*g_in -> g_out channels);
- "slices": the same, its inputs picked by slices of consecutive channels and
  one concatenation (STRIDED_SLICE + CONCATENATION, which XNNPACK runs; GATHER
  runs outside it, between two TRANSPOSEs): within 1.07-1.11x of the grouped
  convolution alone where groups are 16 channels wide (gather: 1.13-1.26x),
  slower than gather for 4-channel groups (a call per slice);
- "scatter": one grouped convolution over the input as it is (per group
  g_in -> k*g_out channels: input group i's contribution to each of its k
  output groups), then gather those partial sums by output group and add
  the k of each (GATHER + SUM).

XNNPACK's GEMM kernels fill 16 output channels at a time on x86 (8 on Arm),
so narrow output groups waste most of each tile in the gather layout; the
scatter layout widens the tile k-fold at the price of moving k partial
sums per output. `compact_model` picks per layer by an estimate fitted to
measurements (benchmarks/layout_choice.py), and keeps a layer sparse when
no layout is estimated clearly faster than the dense one. The block
structure is read from the kernel's zeros, so pruned and stripped models
export alike.

Modules: `_convert` (conversion, quantisation, atomic write, report),
`_rewrite` (the Keras-level compact rewrite), `_kernels` (the compact layers)
and `_latency` (the per-layer latency estimate). Running and timing .tflite
files is `rgp_keras.litert` (no TensorFlow needed).
"""

from rgp_keras.export._convert import QUANTIZE, ExportReport, export_tflite, time_compact_layouts
from rgp_keras.export._kernels import LAYOUTS, CompactKernel, FoldedAway, GatherKernel, ScatterKernel, SliceKernel
from rgp_keras.export._latency import estimated_latency_ratios
from rgp_keras.export._rewrite import compact_model, measured_latency_ratios
from rgp_keras.masking.masks import channel_blocks

__all__ = [
    "ExportReport", "export_tflite", "compact_model", "channel_blocks", "estimated_latency_ratios",
    "measured_latency_ratios", "time_compact_layouts", "CompactKernel", "GatherKernel", "SliceKernel",
    "ScatterKernel", "FoldedAway", "LAYOUTS", "QUANTIZE",
]
