"""Keras 3 callbacks: TensorBoard scalars of per-layer sparsity and graph statistics."""

import keras
import numpy as np

from rgp_keras.errors import InputValueError
from rgp_keras.model_walk import is_rgp_wrapper, leaves, to_numpy


class RegularGraphSummaries(keras.callbacks.Callback):
    """Writes, at the end of every epoch, TensorBoard scalars for each RGP layer of the model.

    Per wrapped layer `NAME`: `NAME/sparsity` (fraction of exact zeros in the
    kernel actually used, i.e. kernel * mask) and `NAME/mask_density`; once
    per run: `graph/nodes`, `graph/degree`, `graph/aspl`, `graph/diameter`,
    `graph/moore_bound`. The Keras 3 counterpart of TF-MOT's `PruningSummaries`.

    Args:
        log_dir: TensorBoard log directory (a `sparsity` subfolder is written).

    Example:
    >>> pruned.fit(x, y, callbacks=[RegularGraphSummaries("logs")])  # doctest: +SKIP
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        wrappers = self._wrappers()
        if not wrappers:
            raise InputValueError("RegularGraphSummaries needs a model pruned by rgp_keras.prune_regular_graph.")
        self._writer = tf.summary.create_file_writer(f"{self.log_dir}/sparsity")
        graph = wrappers[0].graph
        with self._writer.as_default():
            for name in ("nodes", "degree", "aspl", "diameter", "moore_bound"):
                tf.summary.scalar(f"graph/{name}", float(getattr(graph, name)), step=0)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        with self._writer.as_default():
            for wrapper in self._wrappers():
                kernel = to_numpy(wrapper.masked_kernel())
                tf.summary.scalar(f"{wrapper.layer.name}/sparsity", float(np.mean(kernel == 0)), step=epoch)
                tf.summary.scalar(f"{wrapper.layer.name}/mask_density", float(wrapper.density), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()

    def _wrappers(self):
        return [layer for layer in leaves(self.model) if is_rgp_wrapper(layer)]


__all__ = ["RegularGraphSummaries"]
