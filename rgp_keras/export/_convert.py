"""Conversion to .tflite: options, quantisation, the atomic write and the `ExportReport`."""

import collections
import gzip
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from rgp_keras._checks import check_int
from rgp_keras._files import normal_file_mode
from rgp_keras._keras_src import input_signature, is_rebuildable
from rgp_keras.errors import BackendError, ExportCheckError, InputTypeError, InputValueError
from rgp_keras.export._kernels import KERNELS, LAYOUTS
from rgp_keras.export._rewrite import compact_model, masked_kernel_of
from rgp_keras.litert import run_tflite
from rgp_keras.masking.layer_types import layer_type
from rgp_keras.masking.summary import pruning_summary
from rgp_keras.model_walk import carries_masks, leaves, reject_tf_keras, to_numpy
from rgp_keras.prune import strip_pruning

QUANTIZE = (None, "dynamic", "float16", "int8")
_CALIBRATION_SAMPLES = 200
_CHECK_SAMPLES = 4
# A float32 file must reproduce Keras to this share of the outputs' largest magnitude (float32 rounding of
# a reordered sum is ~1e-6); quantized files are only required to run with finite outputs, their error is
# reported.
_FLOAT32_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportReport:
    """What `export_tflite` wrote and what it gained.

    `params`/`macs` are those of the exported computation (per sample), beside
    the dense model's; `nonzero_params` counts the non-zero weights among
    `params`. `format` is what the file holds: "compact" (some layers
    rewritten to compact kernels), "sparse" (zeros sparse-encoded by the
    converter) or "dense". `compacted` maps the layers rewritten to compact
    kernels to their layout ("gather", "slices" or "scatter"); `not_compacted` maps the
    other layers holding zeros to the reason. `max_difference` is the largest
    difference between the written file's outputs (run once by LiteRT) and
    the Keras model's, on `check_samples` inputs.
    """

    path: str
    compact: bool
    format: str
    quantize: str | None
    size_bytes: int
    gzip_bytes: int
    dense_params: int
    params: int
    nonzero_params: int
    dense_macs: int
    macs: int
    max_difference: float
    check_samples: int
    compacted: dict = field(default_factory=dict)
    not_compacted: dict = field(default_factory=dict)
    notes: tuple = ()

    def __str__(self):
        ratio = lambda new, old: f"{new / old:.3f}x" if old else "-"
        rows = [
            ("file", self.path),
            ("format", f"{self.format}, {self.quantize or 'float32'}"),
            ("size", f"{self.size_bytes:,} B (gzip {self.gzip_bytes:,} B)"),
            ("params", f"{self.dense_params:,} -> {self.params:,} ({ratio(self.params, self.dense_params)}), "
                       f"non-zero {self.nonzero_params:,}"),
            ("MACs/sample", f"{self.dense_macs:,} -> {self.macs:,} ({ratio(self.macs, self.dense_macs)})"),
            ("compacted", f"{len(self.compacted)} layers" + _layout_counts(self.compacted)),
            ("checked", f"LiteRT ran the file on {self.check_samples} inputs: outputs within "
                        f"{self.max_difference:.2g} of Keras"),
        ]
        rows += [(f"  kept as is: {name}", reason) for name, reason in self.not_compacted.items()]
        rows += [("note", note) for note in self.notes]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _layout_counts(compacted):
    counts = collections.Counter(compacted.values())
    listed = ", ".join(f"{counts[layout]} {layout}" for layout in KERNELS if counts[layout])
    return f" ({listed})" if listed else ""


def export_tflite(
    model, path, *, compact=True, quantize=None, representative_data=None, layout="auto", threads=1,
    latency_table=None,
):
    """Write a pruned (or stripped) Keras 3 model as a .tflite file for LiteRT.

    Args:
        model: a model from `prune_regular_graph`, or its `strip_pruning` result.
        path: the .tflite file to write (written atomically: on error nothing
            is left behind and an existing file is untouched).
        compact: rewrite each masked Dense/Conv1D/Conv2D into a grouped
            convolution holding only the kept weights (fewer bytes and MACs),
            in the layout estimated fastest (see `compact_model`). With
            `compact=False` the stripped model is converted with the
            converter's sparsity optimisation (zeros still computed;
            sparse-encoded Dense layers run slower than dense below ~90 %
            zeros, and the report says so).
        quantize: None (float32), "dynamic" (int8 weights), "float16", or
            "int8" (full integer; needs `representative_data`).
        representative_data: calibration inputs for "int8": an array of input
            samples `(N, *input_shape)` (a few hundred real samples suffice).
        layout: compact layout per layer: "auto" (estimated fastest on x86
            XNNPACK; layers not estimated faster than dense stay
            dense-shaped: convolutions sparse-encoded, and Dense layers
            stored dense, since LiteRT runs sparse-encoded ones slower), or
            "measured" (the same choice from each masked layer's layouts and
            its dense form timed alone on this machine's LiteRT at `threads`;
            kept in `latency_table`, so a layer shape is timed once; float
            files), or "gather"/"slices"/"scatter" forced wherever it
            applies, e.g. after timing them with `benchmark_tflite` on the
            target device.
        threads: CPU threads the file will run with (LiteRT `num_threads`);
            "auto" keeps more layers dense for more threads, since dense
            GEMMs share out over threads and the compact layouts' channel
            gathers do not.
        latency_table: with layout="measured", the table of layer times
            (a `LatencyTable` or a path, as `predict_latency` takes; default:
            this machine's, in the user's cache folder). A table measured on
            the target device (`time_compact_layouts`, `rgp bench-layers
            pruned.keras` there) makes the choice for that device.

    Before the file is put at `path`, LiteRT runs it once on a few inputs
    (`representative_data` if given, else random values of the input shape)
    and its outputs are compared with the Keras model's: a file that does not
    run, gives non-finite outputs, or (float32) differs from Keras by more
    than 1e-3 of the outputs' magnitude raises `ExportCheckError` and is not
    written.

    Returns:
        An `ExportReport` (sizes, params and MACs before/after, which layers
        were compacted, the check's largest output difference).

    Example:
    >>> import os, tempfile, keras
    >>> from rgp_keras import prune_regular_graph
    >>> conv = lambda filters, size, name: keras.layers.Conv2D(filters, size, padding="same", name=name)
    >>> model = keras.Sequential([keras.Input((16, 16, 64)), conv(64, 3, "first"), conv(64, 3, "middle"),
    ...                           conv(10, 1, "head")])
    >>> pruned = prune_regular_graph(model, sparsity=0.75, seed=0)  # first and last stay dense
    >>> report = export_tflite(pruned, os.path.join(tempfile.mkdtemp(), "model.tflite"))
    >>> report.format, list(report.compacted)
    ('compact', ['middle'])
    """
    reject_tf_keras(model, "export_tflite")
    if keras.backend.backend() != "tensorflow":
        raise BackendError(
            f"export_tflite converts through TensorFlow, but Keras runs on the {keras.backend.backend()!r} backend. "
            "Save the model (model.save('pruned.keras')), then export it from a TensorFlow process: "
            "`rgp export pruned.keras -o model.tflite`, or in Python with KERAS_BACKEND=tensorflow, "
            "keras.saving.load_model('pruned.keras', compile=False) and export_tflite."
        )
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"`model` must be a Keras 3 model, got {type(model).__name__}.")
    if quantize not in QUANTIZE:
        raise InputValueError(f"`quantize` must be one of {QUANTIZE}, got {quantize!r}.")
    if layout not in LAYOUTS:
        raise InputValueError(f"`layout` must be one of {LAYOUTS}, got {layout!r}.")
    if layout != "auto" and not compact:
        raise InputValueError(f"`layout` chooses compact kernels; it needs compact=True, got layout={layout!r}.")
    threads = check_int("threads", threads, minimum=1)
    if threads != 1 and not compact:
        raise InputValueError(f"`threads` chooses compact layouts; it needs compact=True, got threads={threads}.")
    if layout == "measured" and quantize == "int8":
        raise InputValueError('layout="measured" times float files; for quantize="int8" use layout="auto" (the '
                              "estimate, which leaves int8's slow scatter layout out) or force a layout.")
    if latency_table is not None and layout != "measured":
        raise InputValueError(f'`latency_table` holds the layer times of layout="measured", got layout={layout!r}.')
    if layout == "measured":
        from rgp_keras.plan.latency import resolve_table

        latency_table = resolve_table(latency_table, threads, None)
    subclassed = not is_rebuildable(model)
    wrapped = carries_masks(model)
    if subclassed and compact and wrapped:
        raise InputTypeError(
            f"Compact kernels rewrite a model layer by layer, which the subclassed model {model.name!r} "
            f"({type(model).__name__}) does not allow. Export it with compact=False (its RGP wrappers compute with "
            "exact zeros, stored sparsely; no speed-up), or build the architecture as a Sequential or functional "
            "model for the compact speed-up."
        )
    samples = _calibration_samples(model, quantize, representative_data)
    path = _writable_path(path)

    exported = strip_pruning(model) if wrapped and not subclassed else model
    compacted, not_compacted, notes = {}, {}, []
    if compact and subclassed:
        notes.append(f"subclassed model {model.name!r} ({type(model).__name__}) with no RGP layers: exported as it "
                     "is (nothing to compact)")
    elif compact:
        exported, compacted, not_compacted = compact_model(exported, layout, int8=quantize == "int8", threads=threads,
                                                           latency_table=latency_table)
    options, sparse_encoded, option_notes = _converter_options(exported, quantize, samples, compact)
    check_inputs = _check_inputs(model, samples)
    expected = [to_numpy(output) for output in keras.tree.flatten(model(check_inputs, training=False))]
    check = lambda file: _check_file(file, check_inputs, expected, quantize)
    difference = _write_atomically(exported, path, options, check)

    dense, after = pruning_summary(model).totals, pruning_summary(exported).totals
    data = path.read_bytes()
    return ExportReport(
        path=str(path),
        compact=compact,
        format="compact" if compacted else "sparse" if sparse_encoded else "dense",
        quantize=quantize,
        size_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9)),
        dense_params=dense["params"],
        params=after["computed_params"],
        nonzero_params=sum(int(np.count_nonzero(to_numpy(w))) for w in exported.weights),
        dense_macs=dense["macs"],
        macs=after["computed_macs"],
        max_difference=difference,
        check_samples=len(keras.tree.flatten(check_inputs)[0]),
        compacted=dict(compacted),
        not_compacted=dict(not_compacted),
        notes=tuple(notes + option_notes),
    )


def time_compact_layouts(model, table, threads=1):
    """Time into `table` the compact layouts of every RGP-masked layer of `model` (pruned or stripped), each
    alone and dense-shaped, as `export_tflite(layout="measured")` reads them; what the table already holds is
    not timed again. Run on the target device (`rgp bench-layers pruned.keras -o table.json` does), it lets an
    export made elsewhere with that table choose each layer's layout for the device. `table`: a
    `LatencyTable` or a path (a new file, or one to extend). Returns `{layer name: layout}`, the layouts the
    times choose (a layer missing from it stays dense-shaped)."""
    from rgp_keras.plan.latency import LatencyTable, resolve_table

    reject_tf_keras(model, "time_compact_layouts")
    threads = check_int("threads", threads, minimum=1)
    if not isinstance(table, LatencyTable):
        table = LatencyTable(table, threads)  # a new file, or one to extend
    table = resolve_table(table, threads, None)
    if not is_rebuildable(model):
        raise InputTypeError(f"Compact kernels rewrite a model layer by layer, which the subclassed model "
                             f"{model.name!r} ({type(model).__name__}) does not allow: there is nothing to time.")
    wrapped = carries_masks(model)
    _, compacted, _ = compact_model(strip_pruning(model) if wrapped else model, "measured", threads=threads,
                                    latency_table=table)
    return compacted


def _calibration_samples(model, quantize, representative_data):
    if quantize != "int8":
        if representative_data is not None:
            raise InputValueError(
                f"`representative_data` is only used with quantize='int8', got quantize={quantize!r}."
            )
        return None
    if representative_data is None:
        raise InputValueError(
            "quantize='int8' needs `representative_data`: an array of real input samples shaped "
            f"(N, {', '.join(str(d) for d in model.inputs[0].shape[1:])}) to calibrate activation ranges."
        )
    if len(model.inputs) != 1:
        raise InputValueError(
            f"int8 calibration supports single-input models, this one has {len(model.inputs)} inputs."
        )
    samples = np.asarray(representative_data, dtype="float32")
    expected = tuple(model.inputs[0].shape[1:])
    if samples.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, samples.shape[1:])):
        raise InputValueError(
            f"`representative_data` must be shaped (N, {', '.join(map(str, expected))}) like the model input, "
            f"got {samples.shape}."
        )
    if len(samples) == 0:
        raise InputValueError(
            "`representative_data` is empty: give at least one input sample (a few hundred is typical)."
        )
    return samples[:_CALIBRATION_SAMPLES]


def _writable_path(path):
    path = Path(path)
    if path.suffix != ".tflite":
        raise InputValueError(f"The export path must end with .tflite, got {str(path)!r}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {path}: folder {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"Cannot write {path}: no write permission.")
    return path


def _converter_options(model, quantize, samples, compact):
    import tensorflow as tf

    # The converter's sparse encoding shrinks the layers left sparse. A
    # convolution's is densified at load time (speed unchanged); a Dense
    # layer's runs on LiteRT's block-sparse FULLY_CONNECTED kernel, outside
    # XNNPACK, and splits the model's XNNPACK partition: with two 512 -> 512
    # layers at 75 % zeros an MLP ran 1.42x dense, at 87.5 % 1.04-1.05x, at
    # 93.75 % 0.87-1.12x (`python benchmarks/layout_choice.py`, whole MLP), and
    # compact=True beat it at every n/k. So a compact export (made for speed)
    # stores Dense layers it left uncompacted dense. Combined with
    # any quantization, LiteRT 2.3 cannot run the result (XNNPACK refuses the
    # nodes, float16 gives NaN), so quantized files are stored dense.
    optimizations, notes, options = [], [], {}
    zeros = [layer for layer in leaves(model) if _has_zeros(layer)]
    if not quantize:
        sparse = [layer for layer in zeros if layer_type(layer)[1].layout == "dense"]
        unsafe = [layer.name for layer in sparse if layer.kernel.shape[0] % 4]
        slow = [layer.name for layer in sparse]
        if unsafe:
            notes.append(
                "converter sparsity encoding not used: LiteRT's sparse FULLY_CONNECTED gives wrong outputs "
                f"when input features are not a multiple of 4 ({', '.join(unsafe)})"
            )
        elif slow and compact:
            notes.append(
                "converter sparsity encoding not used: the Dense layers left uncompacted "
                f"({', '.join(slow)}) would run on LiteRT's block-sparse FULLY_CONNECTED kernel, slower than dense "
                "unless nearly all zeros"
            )
        else:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
            if slow:
                notes.append(
                    f"sparse-encoded Dense layers ({', '.join(slow)}) run on LiteRT's block-sparse FULLY_CONNECTED "
                    "kernel, slower than dense unless nearly all zeros; compact=True exports them faster"
                )
    sparse_encoded = bool(zeros) and tf.lite.Optimize.EXPERIMENTAL_SPARSITY in optimizations
    if quantize:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if quantize == "int8":
        options["representative_dataset"] = lambda: ([sample[None]] for sample in samples)
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
    options["optimizations"] = optimizations
    return options, sparse_encoded, notes


def _has_zeros(layer):
    kernel = masked_kernel_of(layer)
    return kernel is not None and bool(np.any(kernel == 0))


def _check_inputs(model, samples):
    """Inputs to run the written file on: the first int8 calibration samples, else seeded random values
    (uniform in [0, 1); integer inputs 0) of the input shapes, 16 where a size is variable."""
    if samples is not None:
        return samples[:_CHECK_SAMPLES]
    rng = np.random.default_rng(0)
    arrays = []
    for tensor in getattr(model, "inputs", None) or keras.tree.flatten(input_signature(model)):
        shape = (_CHECK_SAMPLES, *(16 if size is None else size for size in tensor.shape[1:]))
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        floating = np.issubdtype(np.dtype(dtype), np.floating)
        arrays.append(rng.uniform(size=shape).astype(dtype) if floating else np.zeros(shape, dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def _check_file(file, inputs, expected, quantize):
    """Run the .tflite `file` on `inputs`; the largest difference from the Keras outputs `expected`.

    Raises `ExportCheckError` when LiteRT cannot run it, an output is not finite, or a float32 file differs
    from Keras by more than `_FLOAT32_TOLERANCE` of the outputs' largest magnitude.
    """
    try:
        produced = run_tflite(file, inputs)
    except (RuntimeError, ValueError) as error:
        raise ExportCheckError(
            f"The converted file does not run in LiteRT ({error}). Nothing was written. Export with compact=False "
            "to keep every layer in its Keras form, and report the model's layer types to rgp_keras."
        ) from error
    produced = produced if isinstance(produced, list) else [produced]
    if not all(np.all(np.isfinite(output)) for output in produced):
        raise ExportCheckError(
            f"The converted file ({quantize or 'float32'}) gives non-finite outputs in LiteRT where Keras does not. "
            "Nothing was written. Export without quantization, or with another `quantize` setting."
        )
    difference = max(float(np.max(np.abs(got - want), initial=0.0)) for got, want in zip(produced, expected))
    scale = max(1.0, *(float(np.max(np.abs(want), initial=0.0)) for want in expected))
    if quantize is None and difference > _FLOAT32_TOLERANCE * scale:
        raise ExportCheckError(
            f"The converted float32 file's outputs differ from the Keras model's by up to {difference:.3g} (outputs "
            f"up to {scale:.3g}; accepted: {_FLOAT32_TOLERANCE:g} of that). Nothing was written. Export with "
            "compact=False to keep every layer in its Keras form, and report the model to rgp_keras."
        )
    return difference


def _write_atomically(model, path, options, check):
    """Convert `model` into a temporary file beside `path`, return `check(file)`, then move it to `path`."""
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tflite")
    os.close(handle)
    try:
        model.export(partial, format="litert", verbose=False, **options)
        result = check(partial)
        os.chmod(partial, normal_file_mode())
        os.replace(partial, path)
        return result
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
