"""Dataset loaders and generators: validation, error messages, downloads (offline) and determinism."""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from benchmarks import data, synth
from benchmarks.data import DataError
from benchmarks.workloads import WORKLOADS, load_dataset
from scripts import download_data


DATA = Path(os.environ.get("LOCOPROP_DATA", "data"))  # tests/conftest.py: the shared copy when present
SHARED_MNIST = DATA / "mnist"
SHARED_OLIVETTI = DATA / "olivetti" / "olivettifaces.mat"


# ----------------------------------------------------------------------------- MNIST (IDX)

def idx_bytes(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()


def write_idx(path: Path, images: np.ndarray, gz: bool = False, magic: int = 2051) -> Path:
    raw = idx_bytes(images, magic)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A 5-train / 3-test MNIST in tmp_path (train plain, test gzip) with matching digests."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", train)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test, gz=True)
    monkeypatch.setattr(data, "MNIST_IMAGE_FILES",
                        {"train": ("train-images-idx3-ubyte", 5), "test": ("t10k-images-idx3-ubyte", 3)})
    monkeypatch.setattr(data, "MNIST_SHA256", {
        "train-images-idx3-ubyte": hashlib.sha256(idx_bytes(train)).hexdigest(),
        "t10k-images-idx3-ubyte": hashlib.sha256(idx_bytes(test)).hexdigest(),
    })
    return tmp_path, train, test


def test_read_idx_plain_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        path = write_idx(tmp_path / f"x{int(gz)}-idx3-ubyte", images, gz=gz)
        np.testing.assert_array_equal(data.read_idx_images(path, expected_count=2, expected_size=(3, 4)), images)


def test_load_mnist_tiny_files(tiny_mnist):
    root, train, test = tiny_mnist
    ds = load_dataset("mnist", root=str(root))
    assert ds.train.shape == (5, 784) and ds.test.shape == (3, 784)
    assert ds.train.dtype == torch.float32 and ds.loss_kind == "bernoulli" and ds.image_shape == (28, 28)
    torch.testing.assert_close(ds.train, torch.from_numpy(train.reshape(5, -1) / 255.0).float())
    torch.testing.assert_close(ds.test, torch.from_numpy(test.reshape(3, -1) / 255.0).float())
    ds2 = load_dataset("mnist", root=str(root), n_train=2, n_test=1)
    assert ds2.train.shape == (2, 784) and ds2.test.shape == (1, 784)
    torch.testing.assert_close(ds2.train, ds.train[:2])
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("mnist", root=str(root), n_train=6)


def test_load_mnist_torchvision_layout(tiny_mnist, tmp_path_factory):
    root, train, _ = tiny_mnist
    other = tmp_path_factory.mktemp("tv")
    raw = other / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in root.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    ds = load_dataset("mnist", root=str(other))
    torch.testing.assert_close(ds.train, torch.from_numpy(train.reshape(5, -1) / 255.0).float())


def test_mnist_sha256_mismatch(tiny_mnist, monkeypatch):
    root, *_ = tiny_mnist
    monkeypatch.setitem(data.MNIST_SHA256, "train-images-idx3-ubyte", "0" * 64)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=str(root))
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "0" * 64 in message
    assert data.MNIST_SHA256["t10k-images-idx3-ubyte"] not in message  # names the failing file only
    actual = hashlib.sha256((root / "train-images-idx3-ubyte").read_bytes()).hexdigest()
    assert actual in message


def test_corrupt_idx(tmp_path):
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    bad_magic = write_idx(tmp_path / "bad-magic-idx3-ubyte", images, magic=2049)
    with pytest.raises(DataError, match="bad-magic-idx3-ubyte.*magic"):
        data.read_idx_images(bad_magic)
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(idx_bytes(images)[:-10])
    with pytest.raises(DataError, match="truncated-idx3-ubyte"):
        data.read_idx_images(truncated)
    with pytest.raises(DataError, match="short-idx3-ubyte"):
        (tmp_path / "short-idx3-ubyte").write_bytes(b"\x00\x00")
        data.read_idx_images(tmp_path / "short-idx3-ubyte")
    bad_gz = tmp_path / "broken-idx3-ubyte.gz"
    bad_gz.write_bytes(gzip.compress(idx_bytes(images))[:30])
    with pytest.raises(DataError, match="broken-idx3-ubyte.gz"):
        data.read_idx_images(bad_gz)
    with pytest.raises(DataError, match="expected 5"):
        data.read_idx_images(write_idx(tmp_path / "count-idx3-ubyte", images), expected_count=5)


def test_mnist_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=str(tmp_path))
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message
    assert "https://" in message and "dataset.download=true" in message


def test_mnist_download_uses_torchvision(tmp_path, monkeypatch):
    """download=True hands over to torchvision.datasets.MNIST (faked here: no network)."""
    import torchvision

    rng = np.random.default_rng(1)
    images = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)}
    calls = []

    def fake_mnist(root, train=True, download=False, **kwargs):
        calls.append((root, download))
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name, array in images.items():
            write_idx(raw / name, array)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    monkeypatch.setattr(data, "MNIST_IMAGE_FILES",
                        {"train": ("train-images-idx3-ubyte", 5), "test": ("t10k-images-idx3-ubyte", 3)})
    monkeypatch.setattr(data, "MNIST_SHA256", {k: hashlib.sha256(idx_bytes(v)).hexdigest() for k, v in images.items()})
    ds = load_dataset("mnist", root=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True)] and ds.train.shape == (5, 784)

    def failing_mnist(root, train=True, download=False, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", failing_mnist)
    with pytest.raises(DataError, match="ossci-datasets"):
        load_dataset("mnist", root=str(tmp_path / "empty"), download=True)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST not present in shared/data/mnist")
def test_real_mnist():
    sums = dict(reversed(line.split()) for line in (SHARED_MNIST / "SHA256SUMS").read_text().splitlines() if line)
    assert sums == data.MNIST_SHA256  # the hard-coded table is the published one
    ds = load_dataset("mnist", root=str(SHARED_MNIST))  # verifies the sha256 of both image files
    assert ds.train.shape == (60_000, 784) and ds.test.shape == (10_000, 784)
    assert ds.train.dtype == torch.float32
    assert ds.train.min() == 0.0 and ds.train.max() == 1.0 and ds.test.max() == 1.0
    assert 0.12 < ds.train.mean().item() < 0.14  # MNIST's mean intensity is ~0.1307


# ----------------------------------------------------------------------------- FACES / CURVES (.mat)

@pytest.fixture
def small_curves(monkeypatch):
    monkeypatch.setattr(data, "CURVES_TRAIN_SHAPE", (6, 784))
    monkeypatch.setattr(data, "CURVES_TEST_SHAPE", (4, 784))
    rng = np.random.default_rng(2)
    return {"bdata": rng.random((6, 784)), "bdatatest": rng.random((4, 784))}


@pytest.fixture
def small_faces(monkeypatch):
    monkeypatch.setattr(data, "FACES_SHAPE", (625, 12))
    monkeypatch.setattr(data, "FACES_N_TRAIN", 7)
    monkeypatch.setattr(data, "FACES_N_TEST", 3)
    return {"newfaces_single": np.random.default_rng(3).normal(size=(625, 12))}


def test_load_curves(tmp_path, small_curves):
    scipy.io.savemat(tmp_path / "digs3pts_1.mat", small_curves)
    ds = load_dataset("curves", root=str(tmp_path))
    assert ds.loss_kind == "bernoulli" and ds.image_shape == (28, 28) and ds.train.dtype == torch.float32
    torch.testing.assert_close(ds.train, torch.from_numpy(small_curves["bdata"]).float())
    torch.testing.assert_close(ds.test, torch.from_numpy(small_curves["bdatatest"]).float())
    assert load_dataset("curves", root=str(tmp_path), n_train=2, n_test=3).test.shape == (3, 784)


def test_load_faces(tmp_path, small_faces):
    scipy.io.savemat(tmp_path / "newfaces_rot_single.mat", small_faces)
    ds = load_dataset("faces", root=str(tmp_path))
    columns = torch.from_numpy(small_faces["newfaces_single"]).float()
    assert ds.loss_kind == "gaussian" and ds.image_shape == (25, 25)
    # MATLAB stores image j column by column: pixel (row r, column c) is entry c * 25 + r of column j;
    # the loaded rows are row-major images (entry r * 25 + c), like every other data set's
    def row_major(cols):
        return cols.T.reshape(-1, 25, 25).transpose(1, 2).reshape(-1, 625)

    torch.testing.assert_close(ds.train, row_major(columns[:, :7]))  # first columns
    torch.testing.assert_close(ds.test, row_major(columns[:, -3:]))  # last columns
    assert ds.train[2, 3 * 25 + 5] == columns[5 * 25 + 3, 2]
    assert ds.train.is_contiguous()


@pytest.mark.parametrize("content", [b"", b"this is not a MATLAB file" * 10, "truncated"])
def test_corrupt_mat(tmp_path, small_curves, content):
    path = tmp_path / "digs3pts_1.mat"
    if content == "truncated":
        scipy.io.savemat(path, small_curves)
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_dataset("curves", root=str(tmp_path))
    assert str(path) in str(err.value) and data.CURVES_URL in str(err.value)


def test_mat_validation(tmp_path, small_curves, small_faces):
    path = tmp_path / "digs3pts_1.mat"
    cases = [
        ({"bdata": small_curves["bdata"]}, "'bdatatest' missing"),
        ({**small_curves, "bdata": small_curves["bdata"][:5]}, r"shape \(5, 784\), expected \(6, 784\)"),
        ({**small_curves, "bdatatest": small_curves["bdatatest"] * 2}, r"expected within \[0, 1\]"),
        ({**small_curves, "bdata": np.full((6, 784), np.nan)}, "NaN"),
    ]
    for content, pattern in cases:
        scipy.io.savemat(path, content)
        with pytest.raises(DataError, match=pattern) as err:
            load_dataset("curves", root=str(tmp_path))
        assert str(path) in str(err.value) and data.CURVES_URL in str(err.value)
    scipy.io.savemat(tmp_path / "newfaces_rot_single.mat", {"newfaces_single": small_faces["newfaces_single"].T})
    with pytest.raises(DataError, match=r"shape \(12, 625\), expected \(625, 12\)"):
        load_dataset("faces", root=str(tmp_path))


def test_mat_missing_file(tmp_path):
    for name, file, url in (("curves", "digs3pts_1.mat", data.CURVES_URL),
                            ("faces", "newfaces_rot_single.mat", data.FACES_URL)):
        with pytest.raises(DataError) as err:
            load_dataset(name, root=str(tmp_path))
        message = str(err.value)
        assert str(tmp_path / file) in message and url in message and "dataset.download=true" in message


def test_download_file_url(tmp_path, small_curves, monkeypatch):
    source = tmp_path / "server" / "digs3pts_1.mat"
    source.parent.mkdir()
    scipy.io.savemat(source, small_curves)
    monkeypatch.setattr(data, "CURVES_URL", source.as_uri())
    root = tmp_path / "data"
    ds = load_dataset("curves", root=str(root), download=True)
    torch.testing.assert_close(ds.train, torch.from_numpy(small_curves["bdata"]).float())
    assert sorted(p.name for p in root.iterdir()) == ["digs3pts_1.mat"]  # no temporary file left


def test_download_failure_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "data"
    missing_url = (tmp_path / "nowhere.mat").as_uri()
    monkeypatch.setattr(data, "FACES_URL", missing_url)
    with pytest.raises(DataError, match="nowhere.mat"):
        load_dataset("faces", root=str(root), download=True)
    assert not root.exists() or list(root.iterdir()) == []

    class BrokenResponse:
        """Delivers some bytes, then the connection drops."""
        def __init__(self):
            self.sent = False

        def read(self, size=-1):
            if not self.sent:
                self.sent = True
                return b"partial" * 100
            raise ConnectionResetError("connection reset by peer")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: BrokenResponse())
    with pytest.raises(DataError, match="ConnectionResetError") as err:
        data.download_file("http://example.invalid/newfaces_rot_single.mat", root / "newfaces_rot_single.mat")
    assert "http://example.invalid/newfaces_rot_single.mat" in str(err.value)
    assert list(root.iterdir()) == []


def test_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCOPROP_DATA", str(tmp_path))
    assert data.default_root("curves") == tmp_path / "curves"  # $LOCOPROP_DATA/<name> when set
    assert WORKLOADS["faces_synth"].default_root() == tmp_path / "olivetti"
    monkeypatch.delenv("LOCOPROP_DATA")
    assert data.default_root("faces") == Path("data") / "faces"  # else ./data/<name>, where `make data` puts it


def test_unknown_dataset():
    with pytest.raises(ValueError, match="mnist, faces, faces_synth, curves, curves_synth"):
        load_dataset("cifar")


# ----------------------------------------------------------------------------- generators

def test_curves_synth():
    x = synth.curves_synth(300, seed=0)
    assert x.shape == (300, 784) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1 and x.max() == 1
    ink = (x > 0).float().mean(1)
    assert (ink > 0.01).all() and (ink < 0.5).all()  # every image has a stroke, none is filled
    assert ((x > 0) & (x < 1)).any()  # anti-aliased edges
    assert torch.equal(x, synth.curves_synth(300, seed=0))
    assert not torch.equal(x, synth.curves_synth(300, seed=1))
    assert torch.equal(synth.curves_synth(10, seed=0), synth.curves_synth(10, seed=0, chunk=3))


def test_curves_synth_dataset():
    ds = load_dataset("curves_synth", seed=0, n_train=50, n_test=20)
    assert ds.train.shape == (50, 784) and ds.test.shape == (20, 784) and ds.loss_kind == "bernoulli"
    assert not torch.equal(ds.train[:20], ds.test)  # train and test are different streams
    assert torch.equal(ds.train, load_dataset("curves_synth", seed=0, n_train=50, n_test=5).train)
    assert not torch.equal(ds.train, load_dataset("curves_synth", seed=1, n_train=50, n_test=20).train)


@pytest.fixture(params=["fake", "real"])
def olivetti(request, tmp_path):
    """The real Olivetti file when present, and always a fake one of the same layout."""
    if request.param == "real":
        if not SHARED_OLIVETTI.is_file():
            pytest.skip("shared/data/olivetti/olivettifaces.mat not present")
        return SHARED_OLIVETTI
    path = tmp_path / "olivettifaces.mat"
    faces = np.random.default_rng(4).integers(0, 256, (4096, 400), dtype=np.uint8)
    scipy.io.savemat(path, {"faces": faces})
    return path


def test_faces_synth(olivetti):
    train, test, train_person, test_person = synth.faces_synth(600, 200, seed=0, olivetti_path=olivetti,
                                                               return_people=True)
    assert train.shape == (600, 625) and test.shape == (200, 625) and train.dtype == torch.float32
    assert set(train_person.tolist()).isdisjoint(test_person.tolist())
    assert len(set(train_person.tolist())) == 30 and len(set(test_person.tolist())) == 10
    for x in (train, test):
        assert x.mean(1).abs().max() < 1e-4
        torch.testing.assert_close(x.std(1), torch.ones(x.shape[0]), atol=1e-4, rtol=0)
    again = synth.faces_synth(600, 200, seed=0, olivetti_path=olivetti)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    other = synth.faces_synth(600, 200, seed=1, olivetti_path=olivetti)
    assert not torch.equal(train, other[0])


def test_faces_synth_dataset(olivetti):
    ds = load_dataset("faces_synth", root=str(olivetti.parent), n_train=40, n_test=10)
    assert ds.train.shape == (40, 625) and ds.test.shape == (10, 625)
    assert ds.loss_kind == "gaussian" and ds.image_shape == (25, 25)


def test_faces_synth_missing_olivetti(tmp_path):
    with pytest.raises(DataError, match="olivettifaces.mat"):
        load_dataset("faces_synth", root=str(tmp_path))
    (tmp_path / "olivettifaces.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="olivettifaces.mat"):
        synth.faces_synth(10, 10, seed=0, olivetti_path=tmp_path / "olivettifaces.mat")


@pytest.mark.parametrize("dataset, folder", [("mnist", "mnist"), ("curves", "curves"), ("faces", "faces"),
                                             ("faces_synth", "olivetti")])
def test_a_missing_data_file_names_make_data_and_locoprop_data(tmp_path, dataset, folder):
    with pytest.raises(data.DataError) as err:
        load_dataset(dataset, root=str(tmp_path / folder), n_train=0, n_test=0)
    message = str(err.value)
    assert "make data" in message and f"--datasets {folder}" in message and "LOCOPROP_DATA" in message


def test_make_data_checks_the_olivetti_file_it_finds_or_fetches(tmp_path):
    folder = tmp_path / "olivetti"
    folder.mkdir()
    scipy.io.savemat(folder / "olivettifaces.mat", {"faces": np.zeros((4096, 400), dtype=np.float64)})
    with pytest.raises(data.DataError, match="uint8"):
        download_data.fetch_olivetti(folder)  # present, so nothing is downloaded; the wrong dtype is refused
    scipy.io.savemat(folder / "olivettifaces.mat", {"faces": np.full((4096, 400), 7, dtype=np.uint8)})
    assert download_data.fetch_olivetti(folder) == folder / "olivettifaces.mat"
