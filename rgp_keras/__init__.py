"""rgp_keras: Regular Graph Pruning for Keras.

Names are loaded on first use, so `import rgp_keras` (and `rgp_keras.graph`)
stays light and never imports TensorFlow, tf_keras or TF-MOT by itself.
"""

import importlib

from rgp_keras import _registration

__version__ = "0.1.0"

_EXPORTS = {
    "RegularGraph": "rgp_keras.graph",
    "OptimizeResult": "rgp_keras.graph",
    "degree_for_sparsity": "rgp_keras.graph",
    "moore_bound": "rgp_keras.graph",
    "optimize": "rgp_keras.graph",
    "channel_groups": "rgp_keras.masking.masks",
    "kernel_mask": "rgp_keras.masking.masks",
    "RegularGraphPruning": "rgp_keras.masking.wrapper",
    "prune_regular_graph": "rgp_keras.prune",
    "prune_channels": "rgp_keras.channels.prune",
    "reinitialize": "rgp_keras.prune",
    "strip_pruning": "rgp_keras.prune",
    "RegularGraphSummaries": "rgp_keras.masking.callbacks",
    "ExportReport": "rgp_keras.export",
    "export_tflite": "rgp_keras.export",
    "run_tflite": "rgp_keras.litert",
    "benchmark_tflite": "rgp_keras.litert",
    "compare_tflite": "rgp_keras.litert",
    "predict_latency": "rgp_keras.plan.latency",
    "LatencyTable": "rgp_keras.plan.latency",
    "prune_for_latency": "rgp_keras.plan.search",
    "LatencyPlan": "rgp_keras.plan.search",
    "load_mnist": "rgp_keras.datasets",
    "load_fashion_mnist": "rgp_keras.datasets",
    "PruningSummary": "rgp_keras.masking.summary",
    "pruning_summary": "rgp_keras.masking.summary",
    "distiller": "rgp_keras.data_aware.distill",
    "SoftTargetDistillation": "rgp_keras.data_aware.distill",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


# Saved pruned models load whatever the import order; the graph-only path stays free of TensorFlow.
_registration.register()


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rgp_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
