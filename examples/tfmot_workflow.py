"""RGP inside a TF-MOT workflow (tf_keras): prune, fine-tune with TF-MOT callbacks, strip, PQAT, int8 LiteRT.

tf_keras CNN on real MNIST -> rgp_keras.prune_regular_graph at 87.5 % (the
wrappers are TF-MOT PruneLowMagnitude subclasses with fixed masks) -> fit with
tfmot's UpdatePruningStep and PruningSummaries -> tfmot.sparsity.keras.strip_pruning
-> sparsity-preserving quantization-aware training (PQAT) -> int8 .tflite ->
LiteRT accuracy beside the Keras model's, and a check that every masked weight
is still zero in the int8 file.

    python examples/tfmot_workflow.py [--train-samples 60000] [--epochs 2] [--out tfmot-output]
"""

import argparse
import os
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # TF-MOT works on tf_keras (Keras 2)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import rgp_keras
from rgp_keras.litert import load_interpreter


def cnn():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10),
        ]
    )


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=2, help="epochs for each of: dense, RGP fine-tune, PQAT")
    parser.add_argument("--test-samples", type=int, default=10000, help="test images evaluated (smoke runs: fewer)")
    parser.add_argument("--out", default="tfmot-output")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)

    (x_train, y_train), (x_test, y_test) = rgp_keras.load_mnist()
    x_train = (x_train[: args.train_samples, ..., None] / 255.0).astype("float32")
    y_train = y_train[: args.train_samples]
    x_test = (x_test[: args.test_samples, ..., None] / 255.0).astype("float32")
    y_test = y_test[: args.test_samples]

    dense = compiled(cnn())
    dense.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)

    # 32 nodes, degree 4: every middle layer keeps 4/32 of its weights.
    pruned = compiled(rgp_keras.prune_regular_graph(dense, sparsity=0.875, nodes=32, seed=0))
    print(rgp_keras.pruning_summary(pruned))
    pruned.fit(
        x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep(),
                   tfmot.sparsity.keras.PruningSummaries(log_dir=str(out / "logs"))],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)

    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    qat = compiled(tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()))
    qat.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)

    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path = out / "rgp_int8.tflite"
    path.write_bytes(converter.convert())

    keras_accuracy = qat.evaluate(x_test, y_test, verbose=0)[1]
    litert_predictions = rgp_keras.run_tflite(path, x_test).argmax(-1)
    keras_predictions = qat.predict(x_test, verbose=0).argmax(-1)
    litert_accuracy = float(np.mean(litert_predictions == y_test))
    print(f"dense accuracy (Keras)      {dense.evaluate(x_test, y_test, verbose=0)[1]:.4f}")
    print(f"RGP 87.5% accuracy (Keras)  {pruned.evaluate(x_test, y_test, verbose=0)[1]:.4f}")
    print(f"PQAT accuracy (Keras)       {keras_accuracy:.4f}")
    print(f"int8 accuracy (LiteRT)      {litert_accuracy:.4f}")
    print(f"LiteRT/Keras agreement      {np.mean(litert_predictions == keras_predictions):.4f}")
    print(f"masked weights zero in int8 file: {masked_weights_are_zero(pruned, path)}")
    print(f"int8 file: {path} ({path.stat().st_size:,} bytes)")


def masked_weights_are_zero(pruned, path):
    """Whether, for every RGP layer, the int8 weight tensor in the .tflite file is zero where the mask is."""
    interpreter = load_interpreter(path)
    tensors = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8 and len(d["shape"]) >= 2]
    for layer in pruned.layers:
        if not hasattr(layer, "masked_kernel"):
            continue
        mask = layer.mask.numpy()
        # LiteRT stores conv kernels as (out, h, w, in) and dense ones as (out, in).
        expected = np.moveaxis(mask, -1, 0) if mask.ndim == 4 else mask.T
        candidates = [d for d in tensors if tuple(d["shape"]) == expected.shape]
        if not any(np.all(interpreter.get_tensor(d["index"])[expected == 0] == 0) and
                   np.any(interpreter.get_tensor(d["index"]) != 0) for d in candidates):
            return False
    return True


if __name__ == "__main__":
    main()
