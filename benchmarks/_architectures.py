"""Architectures of benchmarks/oneshot.py, built alike in Keras 3 and in tf_keras (TF-MOT's twin)."""

ARCHITECTURES = {
    # VGG-BN at ~44 M MACs (pooling after the stem): the one-shot benchmark's CNN, >= 64 channels per
    # pruned layer so that n = 16 groups hold >= 4 channels.
    "CNN": [("conv", 64), ("pool",), ("conv", 64), ("conv", 128), ("pool",), ("conv", 128), ("conv", 256),
            ("gap",), ("dense", 10, None)],
    "MLP-512": [("flatten",), ("dense", 512, "relu"), ("dense", 512, "relu"), ("dense", 512, "relu"),
                ("dense", 512, "relu"), ("dense", 10, None)],
}


def build(K, spec):
    """A Sequential model for 28x28x1 inputs from `spec`, with `K` the keras or tf_keras module."""
    layers = [K.Input((28, 28, 1))]
    for item in spec:
        kind = item[0]
        if kind == "flatten":
            layers.append(K.layers.Flatten())
        elif kind == "dense":
            layers.append(K.layers.Dense(item[1], activation=item[2]))
        elif kind == "conv":
            layers += [
                K.layers.Conv2D(item[1], 3, padding="same", use_bias=False),
                K.layers.BatchNormalization(momentum=0.9),
                K.layers.ReLU(),
            ]
        elif kind == "pool":
            layers.append(K.layers.MaxPooling2D())
        elif kind == "gap":
            layers.append(K.layers.GlobalAveragePooling2D())
    return K.Sequential(layers)
