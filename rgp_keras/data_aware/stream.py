"""Streaming calibration batches through a model one segment at a time, with memory bounded by a batch.

Data-aware pruning changes layers in topological order (a refit, new BatchNorm
statistics), and what a layer sees must come from the layers before it as they
are *after* their change. `walk` runs the model's layer calls (and a dense
reference's beside them) batch by batch up to the next layer that changes,
feeding every observer on the way (Gram sums, channel moments), lets the
observers change their layers, and continues from there. Between two passes
only the tensors that cross the cut (the frontier) are kept, for every batch,
in a `Store` that holds arrays in memory up to a byte budget and spills the
rest to a temporary folder, so that peak memory does not grow with the
number of calibration samples. Each layer call runs once per batch; a layer
whose inputs equal the reference's (upstream of every change) is not run twice,
and the reference runs one call ahead, so that an observer sees the dense
layer's outputs (a refit's targets) without computing them again. A pass over
several batches is traced once (`tf.function`, `jax.jit`) and returns what its
observers and the next cut need; a pass is also cut where what it returns for
its observers would pass `OBSERVED_BYTES` a batch (the observed tensors of a
traced call are all alive when it returns).
"""

import collections
import concurrent.futures
import contextlib
import math
import os
import shutil
import tempfile
import weakref

import numpy as np

from rgp_keras.model_walk import is_rgp_wrapper, is_tf_keras, run_call, to_numpy

# Batches from which a pass is traced (tf.function, jax.jit): on fewer, tracing costs more than it saves.
_TRACED_FROM = 3
# Bytes of arrays a Store keeps in memory before it writes the rest to disk.
MEMORY_BYTES = 1 << 28
# Bytes of the observed tensors one batch of a pass returns at once (every input of every observed layer, when
# nothing changes on the way: 1.5 GB for ResNet50 at its default batch); beyond, the pass is cut.
OBSERVED_BYTES = 1 << 29


class Store:
    """Arrays by key, held in memory up to `memory_bytes` in all, the rest in files of a temporary folder.

    In memory a value stays as it was given (a backend tensor is not converted,
    so reading it back costs nothing). Files hold the raw bytes, written by a
    background thread, so that the next batch computes while one is written
    (at most `_PENDING_WRITES` arrays wait for it), and are read back whole
    (not memory-mapped, which would count towards the process's resident
    memory) into memory aligned as TensorFlow's tensors are, so that a pass
    takes them without a copy (`_tensorflow_value`).
    The folder is removed when the store is closed or garbage-collected.
    """

    def __init__(self, memory_bytes=None):
        self.memory_bytes, self.held = MEMORY_BYTES if memory_bytes is None else memory_bytes, 0
        self.in_memory, self.on_disk = {}, {}  # key -> value; key -> (path, the write's future)
        self.folder, self.files, self.writer, self.pending = None, 0, None, collections.deque()

    def put(self, key, array):
        self.drop(key)
        size = _nbytes(array)
        if self.held + size <= self.memory_bytes:
            self.in_memory[key] = array
            self.held += size
            return
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="rgp_keras-")
            self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rgp_keras-store")
            self._cleanup = weakref.finalize(self, _remove, self.folder, self.writer)
        self.files += 1
        path = os.path.join(self.folder, f"{self.files}.bin")
        while len(self.pending) >= _PENDING_WRITES:
            self.pending.popleft().result()
        array = np.ascontiguousarray(to_numpy(array))
        self.pending.append(self.writer.submit(array.tofile, path))
        self.on_disk[key] = path, self.pending[-1], array.shape, array.dtype

    def get(self, key):
        if key in self.in_memory:
            return self.in_memory[key]
        path, written, shape, dtype = self.on_disk[key]
        written.result()
        array = _aligned_empty(shape, dtype)
        view, done = memoryview(array.reshape(-1).view(np.uint8)), 0
        with open(path, "rb", buffering=0) as file:
            while done < len(view):  # one read returns at most ~2 GB on Linux
                read = file.readinto(view[done:])
                if not read:
                    raise OSError(f"{path} ends after {done} of its {len(view)} bytes: the temporary file was cut")
                done += read
        return array

    def drop(self, key):
        if key in self.in_memory:
            self.held -= _nbytes(self.in_memory.pop(key))
        elif key in self.on_disk:
            self.writer.submit(os.remove, self.on_disk.pop(key)[0])  # after its write: one thread, in order

    def close(self):
        self.in_memory.clear()
        self.held = 0
        if self.folder is not None:
            self._cleanup()


# Arrays a Store may hold in memory while they wait to be written.
_PENDING_WRITES = 1


# Byte alignment of TensorFlow's tensor buffers (EIGEN_MAX_ALIGN_BYTES): a tensor may share an array so aligned.
_ALIGN = 64


def _aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a `_ALIGN`-byte boundary."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    raw = np.empty(size + _ALIGN, np.uint8)
    offset = -raw.ctypes.data % _ALIGN
    return raw[offset : offset + size].view(dtype).reshape(shape)


def _tensorflow_value(value):
    """`value` as a TensorFlow tensor: a 64-byte-aligned, C-contiguous float array (as `Store.get` reads them back)
    is shared through DLPack (`tf.convert_to_tensor` copies every array: 4x the time of reading it back, measured),
    anything else converted."""
    import tensorflow as tf

    if (isinstance(value, np.ndarray) and value.dtype in (np.float32, np.float64) and value.flags.c_contiguous
            and value.ctypes.data % _ALIGN == 0):
        return tf.experimental.dlpack.from_dlpack(value.__dlpack__())
    return tf.convert_to_tensor(value)


def _remove(folder, writer):
    writer.shutdown(wait=True)
    shutil.rmtree(folder, ignore_errors=True)


def _nbytes(array):
    """Bytes of a numpy array or backend tensor (TensorFlow, JAX, torch)."""
    dtype = getattr(array.dtype, "name", None) or str(array.dtype).split(".")[-1]
    return math.prod(array.shape) * np.dtype(dtype).itemsize


class Observer:
    """What `walk` feeds at one layer call: `add` once per batch of rows, then `finish` once.

    `changes` says whether `finish` changes the layer (or any later one): the
    walk then ends its pass at this call, so that what follows runs with the
    change.
    """

    changes = True
    also = ()  # ids of more tensors of the model whose values `add` is given after the call's inputs

    def add(self, start, inputs, reference_inputs, reference_outputs):
        """Rows `start`.. of this call's inputs (one value per input tensor, then one per tensor in `also`), and of
        the reference call's inputs (then the reference's values of `also`) and outputs (None without a
        reference). A tensor in `also` must be written before this call and read after it; every observer of
        a call is given the tensors of all their `also`s, in the order they were visited."""
        raise NotImplementedError

    def finish(self):
        raise NotImplementedError


_BLAS = []  # threadpoolctl's controller of numpy's and scipy's BLAS and their threads when it was made


@contextlib.contextmanager
def blas_threads(threads=None):
    """A context (or decorator) in which numpy's and scipy's BLAS (two OpenBLAS pools) run on `threads`
    threads (None: as many as they had when rgp_keras first set them).

    The engine runs with one (`walk`): idle pool workers spin after each
    call, and the engine alternates both pools with the backend's own threads
    and with single-threaded numpy copies. On 2 cores two BLAS threads made
    the demo's data-aware step 1.6x slower (its Cholesky factorisations 2.7x,
    its copies 2x) and MobileNetV2 / EfficientNetB0 at 512 images 1.12x; only
    the largest X^T X products (`BLAS_THREADED_FROM`) take every thread."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController().select(user_api="blas")
        _BLAS[:] = controller, max((pool.num_threads for pool in controller.lib_controllers), default=1)
    controller, default = _BLAS
    with controller.limit(limits=threads or default):
        yield


# Multiply-adds of a product from which its BLAS call takes every thread (the README quickstart's 576- and
# 1152-feature X^T X over 200k and 50k rows: its data-aware step 3.8 -> 2.9 s, a one-off probe).
BLAS_THREADED_FROM = 5e8


@blas_threads(1)
def walk(calls, reference, calibration, visit, *, rows=None, progress=None):
    """Stream `calibration` through a model's `calls` (`LayerCalls`) and, call by call beside them, `reference`'s.

    `visit(call, reference_call, changed)` is called for every call in
    topological order (`changed`: whether the call's inputs may differ from
    the reference's) and returns an `Observer` of that call's inputs, or None.
    The inputs an observer sees come from the layers before it after every
    earlier observer has finished.

    Args:
        calls: the model's `LayerCalls`.
        reference: the reference model's `LayerCalls` (same graph), or None.
        calibration: a `rgp_keras.data_aware.calibration.Calibration`.
        visit: as above.
        rows: stream only the first so many rows of `calibration` (default: all).
        progress: a `keras.utils.Progbar` over the calls, or None.
    """
    paired = reference.calls if reference is not None else [None] * len(calls.calls)
    same = _same_as_reference(calls, reference)
    pending, cut, observed = [], _Frontier(calls, reference, same), 0
    batches = _Batches(calibration, rows)
    for index, (call, reference_call) in enumerate(zip(calls.calls, paired)):
        changed = reference is not None and not all(key in same for key in call.inputs)
        observer = visit(call, reference_call, changed)
        if observer is not None:
            size = calibration.batch_size * _observed_bytes(calls, call, reference, reference_call, observer.also)
            if pending and observed + size > OBSERVED_BYTES:  # the tensors a batch's call returns, bounded
                cut = _run_pass(calls, reference, batches, cut, pending[-1][0], pending, progress)
                pending, observed = [], 0
            pending.append((index, observer))
            observed += size
            if observer.changes:
                cut = _run_pass(calls, reference, batches, cut, index, pending, progress)
                pending, observed = [], 0
    if pending:
        cut = _run_pass(calls, reference, batches, cut, pending[-1][0], pending, progress)
    cut.close()
    if progress is not None:
        progress.update(len(calls.calls), finalize=True)


def _observed_bytes(calls, call, reference, reference_call, also=()):
    """Bytes per sample (float32) an observer of `call` is given: its inputs and the tensors `also`, and the
    reference call's inputs and outputs and its values of `also`."""
    keys = [(calls, key) for key in (*call.inputs, *also)]
    if reference_call is not None:
        keys += [(reference, key) for key in (*reference_call.inputs, *reference_call.outputs)]
        keys += [(calls, key) for key in also]
    return sum(4 * math.prod(d or 1 for d in owner.shapes[key][1:]) for owner, key in keys)


def _same_as_reference(calls, reference):
    """Tensor ids of `calls` whose values equal the reference's (every input so, no wrapper on the way, and the
    same shape: not thinned by the width axis)."""
    if reference is None:
        return set()
    same = set(calls.inputs)
    for call, reference_call in zip(calls.calls, reference.calls):
        changes = is_rgp_wrapper(call.layer) or hasattr(call.layer, "layers") or any(
            calls.shapes[key] != reference.shapes[other] for key, other in zip(call.outputs, reference_call.outputs))
        if all(key in same for key in call.inputs) and not changes:
            same.update(call.outputs)
    return same


class _Frontier:
    """What a pass needs at the cut before call `index`, stored per batch: the model's tensors crossing the cut
    and the reference's, which runs one call ahead (its call `index` has run: its outputs are stored, and
    inputs that only call `index` reads are not)."""

    def __init__(self, calls, reference, same, index=0, store=None, pair=None, last_use=None):
        self.calls, self.reference, self.same, self.index = calls, reference, same, index
        self.store = Store() if store is None else store
        self.pair, self.last_use = pair, last_use
        if pair is None:
            self.pair = {}  # model tensor id -> reference tensor id
            if reference is not None:
                self.pair.update(zip(calls.inputs, reference.inputs))
                for call, reference_call in zip(calls.calls, reference.calls):
                    self.pair.update(zip(call.outputs, reference_call.outputs))
            self.last_use = _last_use(calls)
        self.crossing, self.entries = self._needed(index)

    def at(self, index):
        """The frontier at the cut before call `index`, sharing this one's store (nothing stored or dropped)."""
        return _Frontier(self.calls, self.reference, self.same, index, self.store, self.pair, self.last_use)

    def _needed(self, index):
        """(model tensor ids crossing the cut before call `index`, the (side, id) entries stored for it)."""
        if index == 0:
            return set(), set()
        written = set()
        for call in self.calls.calls[:index]:
            written.update(call.outputs)
        crossing = {key for key in written if self.last_use.get(key, -1) >= index}
        if self.reference is None:
            return crossing, {("model", key) for key in crossing}
        entries = {("reference", key) for key in self.calls.calls[index].outputs}
        for key in crossing:
            if key in self.same:
                entries.add(("reference", key))
            else:
                entries.add(("model", key))
                if self.last_use[key] > index:
                    entries.add(("reference", key))
        return crossing, entries

    def load(self, batch, arrays):
        """(model values, reference values: empty without a reference) of one batch at this cut; `arrays`: the
        batch's inputs."""
        # the model's inputs, where a call from this cut on reads them
        read = [self.index == 0 or self.last_use.get(key, -1) >= self.index for key in self.calls.inputs]
        values = {key: array for key, array, used in zip(self.calls.inputs, arrays, read) if used}
        reference = {}
        if self.reference is not None:
            reference = {key: array for key, array, used in zip(self.reference.inputs, arrays, read) if used}
        for side, key in self.entries:
            value = self.store.get((side, key, batch))
            if side == "model":
                values[key] = value
            else:
                reference[self.pair[key]] = value
        for key in self.crossing & self.same:
            values[key] = reference[self.pair[key]]
        return values, reference

    def release(self, values, reference, call, index):
        """Forget a batch's values that no call after call `index` reads (run eagerly, a pass would otherwise hold
        every activation of its calls at once)."""
        for key in call.inputs:
            if self.last_use[key] <= index:
                values.pop(key, None)
                reference.pop(self.pair.get(key), None)

    def moved(self, after, batches):
        """`after`, once every batch is saved: drop what it does not need."""
        for side, key in self.entries - after.entries:
            for batch in range(batches):
                self.store.drop((side, key, batch))
        return after

    def close(self):
        self.store.close()


def _last_use(calls):
    """tensor id -> index of the last call reading it (model outputs: past the end)."""
    last = {}
    for index, call in enumerate(calls.calls):
        for key in call.inputs:
            last[key] = index
    for key in calls.outputs:
        last[key] = len(calls.calls)
    return last


class _Batches:
    """The batches of the first `rows` rows of a calibration set (all: None), and how many there are."""

    def __init__(self, calibration, rows):
        self.calibration, self.rows = calibration, rows
        total = calibration.rows if rows is None else min(rows, calibration.rows)
        self.count = -(-total // calibration.batch_size)

    def __iter__(self):
        return self.calibration.batches(self.rows)


def _no_grad():
    """A context without gradient tracking where the backend tracks it eagerly (torch)."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _run_pass(calls, reference, batches, frontier, end, pending, progress):
    """Run the calls from the frontier's cut up to call `end` (not run) on every batch, feeding the `pending`
    observers at their calls, store the tensors crossing the cut before `end`, then finish the observers."""
    start = frontier.index
    observers = {}
    for index, observer in pending:
        observers.setdefault(index, []).append(observer)
    after = frontier.at(end)
    saved = sorted(after.entries - frontier.entries)
    forward = lambda values, reference_values: _forward(
        calls, reference, frontier, start, end, observers, saved, values, reference_values
    )
    if batches.count >= _TRACED_FROM:
        forward = _compiled(forward, calls)
    done = 0
    with _no_grad():
        for batch, (row, arrays) in enumerate(batches):
            observed, values = forward(*frontier.load(batch, arrays))
            for index, arguments in observed.items():
                for observer in observers[index]:
                    observer.add(row, *arguments)
            for entry, value in zip(saved, values):
                frontier.store.put((*entry, batch), value)
            done = batch + 1
            if progress is not None:
                progress.update(start + (end - start) * done // batches.count)
    for _, observer in pending:
        observer.finish()
    return frontier.moved(after, done)


def _forward(calls, reference, frontier, start, end, observers, saved, values, reference_values):
    """One batch of a pass: run calls `start`..`end` - 1 (the reference's up to `end`: it runs one call ahead, so
    that observers at `end` see its outputs). Returns ({call index: (inputs, reference inputs, reference
    outputs)} for the observed calls, [the values of the `saved` (side, tensor id) entries])."""
    values, reference_values = dict(values), dict(reference_values)
    observed = {}
    for index in range(start, end + 1):
        call = calls.calls[index]
        reference_call = reference.calls[index] if reference is not None else None
        if reference_call is not None and not (index == start and start > 0):  # not run ahead in the last pass
            reference_values.update(zip(reference_call.outputs, run_call(reference_call, reference_values)))
        if index in observers:
            also = [key for observer in observers[index] for key in observer.also]
            observed[index] = (
                [values[key] for key in (*call.inputs, *also)],
                [*(reference_values[key] for key in reference_call.inputs),
                 *(reference_values[frontier.pair[key]] for key in also)] if reference_call else None,
                [reference_values[key] for key in reference_call.outputs] if reference_call else None,
            )
        if index == end:
            break
        if reference_call is not None and all(key in frontier.same for key in call.outputs):
            values.update((key, reference_values[frontier.pair[key]]) for key in call.outputs)
        else:
            values.update(zip(call.outputs, run_call(call, values)))
        frontier.release(values, reference_values, call, index)
    return observed, [values[key] if side == "model" else reference_values[frontier.pair[key]] for side, key in saved]


def _compiled(function, calls):
    """`function` traced once for the backend of the model's layers (TensorFlow: `tf.function` with the batch
    dimension left open; JAX: `jax.jit`), or as it is (torch, which runs eagerly)."""
    import keras

    backend = "tensorflow" if calls.calls and is_tf_keras(calls.calls[0].layer) else keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend != "tensorflow":
        return function
    import tensorflow as tf

    traced = None

    def run(values, reference_values):
        nonlocal traced
        for given in (values, reference_values):  # in place: arrays read from disk are freed once converted
            given.update([(key, _tensorflow_value(value)) for key, value in given.items()])
        if traced is None:
            open_batch = lambda value: tf.TensorSpec((None, *value.shape[1:]), value.dtype)
            signature = tf.nest.map_structure(open_batch, [values, reference_values])
            traced = tf.function(function, autograph=False, input_signature=signature)
        return traced(values, reference_values)

    return run
