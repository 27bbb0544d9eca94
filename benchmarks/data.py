"""File loaders for the deep-autoencoder benchmarks (docs/method.md, "Data").

Every loader returns the rows of a real data set as numpy arrays; `benchmarks.workloads` turns
them into tensors of the right size on the right device. Real files are
validated before use (IDX header and sha256 for MNIST; keys, shapes, finiteness and range for the
.mat files), because no checksums are published for FACES and CURVES and a silently wrong file
would only show up as a strange loss curve. Every failure is a `DataError` whose message names the
file, what was expected, what was wrong and where to get the file. Downloads happen only when
asked for (`download=True`); the machines here have no internet.

The generators of `benchmarks.synth` stand in for CURVES and FACES when the real files are absent.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.request
from pathlib import Path

import numpy as np


class DataError(RuntimeError):
    """A dataset file is missing, corrupt, or could not be downloaded."""


# ----------------------------------------------------------------------------- locations

DATA_ENV = "LOCOPROP_DATA"  # a folder holding one sub-folder per data set: mnist/, faces/, curves/, olivetti/


def default_root(name: str) -> Path:
    """Where a data set is looked for when no root is given: $LOCOPROP_DATA/<name> when that
    variable is set (one place for every data set, e.g. a cluster's shared copy), else ./data/<name>
    (where `make data` downloads to)."""
    base = os.environ.get(DATA_ENV)
    return (Path(base) if base else Path("data")) / name


def fetch_hint(folder: str) -> str:
    """How to put a missing data set's files in place (the fix every 'not found' error names)."""
    return (f"fix: make data (python -m scripts.download_data --datasets {folder}), or export {DATA_ENV}=<a folder "
            f"holding {folder}/>, or set dataset.root to the folder holding the file")


# ----------------------------------------------------------------------------- MNIST

MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
IDX_IMAGES_MAGIC = 2051
# Image files per split: (file name, number of images). Only the images are needed.
MNIST_SPLIT = (60_000, 10_000)
MNIST_IMAGE_FILES = {"train": ("train-images-idx3-ubyte", MNIST_SPLIT[0]), "test": ("t10k-images-idx3-ubyte", MNIST_SPLIT[1])}
MNIST_IMAGE_SIZE = (28, 28)
# sha256 of the UNCOMPRESSED original files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def _find_idx(root: Path, name: str) -> Path | None:
    """The file `name` or `name.gz` in root or in torchvision's layout root/MNIST/raw/."""
    for folder in (root, root / "MNIST" / "raw"):
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def read_idx_images(path: str | Path, expected_count: int | None = None,
                    expected_size: tuple[int, int] | None = None,
                    sha256: str | None = None) -> np.ndarray:
    """Parse an IDX image file (plain or .gz) into a uint8 array (n, rows, cols).

    Checks the magic number, the dimensions and the byte count; with `sha256`, also the digest
    of the uncompressed bytes.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: could not read the file ({type(e).__name__}: {e})") from e
    if len(raw) < 16:
        raise DataError(f"{path}: truncated IDX file, {len(raw)} bytes, shorter than the 16-byte header")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != IDX_IMAGES_MAGIC:
        raise DataError(f"{path}: bad IDX magic number {magic}, expected {IDX_IMAGES_MAGIC} (unsigned byte images, 3 dims)")
    if expected_count is not None and n != expected_count:
        raise DataError(f"{path}: header says {n} images, expected {expected_count}")
    if expected_size is not None and (rows, cols) != tuple(expected_size):
        raise DataError(f"{path}: header says {rows}x{cols} images, expected {expected_size[0]}x{expected_size[1]}")
    expected_bytes = 16 + n * rows * cols
    if len(raw) != expected_bytes:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected_bytes} for {n} images of {rows}x{cols} "
                        f"(file truncated or has trailing data)")
    if sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != sha256:
            raise DataError(f"{path}: sha256 of the uncompressed bytes is {actual}, expected {sha256}")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def _download_mnist(root: Path) -> None:
    """Fetch MNIST with torchvision into root/MNIST/raw/ (only on request)."""
    try:
        import torchvision
        torchvision.datasets.MNIST(str(root), train=True, download=True)
    except Exception as e:  # network, disk or checksum failure inside torchvision
        raise DataError(f"downloading MNIST into {root / 'MNIST' / 'raw'} from {' or '.join(MNIST_URLS)} failed: "
                        f"{type(e).__name__}: {e}") from e


def load_mnist(root: str | Path, download: bool = False, verify_sha256: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST train and test images as uint8 arrays (n, 784), rows in file order."""
    root = Path(root)
    names = [file for file, _ in MNIST_IMAGE_FILES.values()]
    if download and any(_find_idx(root, name) is None for name in names):
        _download_mnist(root)
    arrays = []
    for split, (name, count) in MNIST_IMAGE_FILES.items():
        path = _find_idx(root, name)
        if path is None:
            raise DataError(
                f"MNIST {split} images not found: no {name} or {name}.gz in {root} or {root / 'MNIST' / 'raw'}. "
                f"Get it from {MNIST_URLS[0]}{name}.gz (or {MNIST_URLS[1]}), or set dataset.download=true "
                f"to download it with torchvision; {fetch_hint('mnist')}")
        digest = MNIST_SHA256[name] if verify_sha256 else None
        images = read_idx_images(path, expected_count=count, expected_size=MNIST_IMAGE_SIZE, sha256=digest)
        arrays.append(images.reshape(images.shape[0], -1))
    return arrays[0], arrays[1]


# ----------------------------------------------------------------------------- .mat files (FACES, CURVES)

MAT_BASE_URL = "http://www.cs.toronto.edu/~jmartens/"
FACES_FILE = "newfaces_rot_single.mat"
FACES_URL = MAT_BASE_URL + FACES_FILE
FACES_KEY = "newfaces_single"
FACES_SHAPE = (625, 165_600)  # columns are 25x25 images: 400 faces x 414 variants
FACES_SIDE = 25
FACES_N_TRAIN = 103_500  # first columns: 25 people
FACES_N_TEST = 41_400  # last columns: 10 people (the 20,700 in between are the 5 validation people)

CURVES_FILE = "digs3pts_1.mat"
CURVES_URL = MAT_BASE_URL + CURVES_FILE
CURVES_TRAIN_KEY, CURVES_TEST_KEY = "bdata", "bdatatest"
CURVES_TRAIN_SHAPE = (20_000, 784)
CURVES_TEST_SHAPE = (10_000, 784)


def download_file(url: str, dest: str | Path) -> None:
    """Download url to dest atomically: a temporary file in the same folder, then os.replace.

    On any failure the partial file is deleted, so a later run never mistakes it for data.
    """
    dest = Path(dest)
    tmp_name = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name + ".", suffix=".part",
                                         delete=False) as tmp:
            tmp_name = tmp.name
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        os.replace(tmp_name, dest)
        tmp_name = None
    except Exception as e:
        raise DataError(f"downloading {url} to {dest} failed: {type(e).__name__}: {e}") from e
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def load_mat_array(path: str | Path, key: str, shape: tuple[int, ...], url: str | None = None,
                   value_range: tuple[float, float] | None = None, data: dict | None = None) -> np.ndarray:
    """Load one array from a .mat file and check its shape, finiteness and (optionally) range.

    Pass `data` (a loadmat result) to validate several keys of one file without reloading it.
    """
    path = Path(path)
    where = f" (get it from {url})" if url else ""
    if data is None:
        data = read_mat(path, url)
    if key not in data:
        keys = sorted(k for k in data if not k.startswith("__"))
        raise DataError(f"{path}: key {key!r} missing, found {keys}; expected {key!r} of shape {shape}{where}")
    array = data[key]
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: {key!r} is not a numeric array (got {type(array).__name__}); "
                        f"expected shape {shape}{where}")
    if array.shape != tuple(shape):
        raise DataError(f"{path}: {key!r} has shape {array.shape}, expected {tuple(shape)}{where}")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: {key!r} contains NaN or infinite values; expected finite values{where}")
    if value_range is not None:
        lo, hi = float(array.min()), float(array.max())
        if lo < value_range[0] or hi > value_range[1]:
            raise DataError(f"{path}: {key!r} has values in [{lo:g}, {hi:g}], expected within "
                            f"[{value_range[0]:g}, {value_range[1]:g}]{where}")
    return array


def read_mat(path: str | Path, url: str | None = None) -> dict:
    """scipy.io.loadmat with every failure turned into a DataError naming the file."""
    import scipy.io

    path = Path(path)
    where = f" (get it from {url})" if url else ""
    if not path.is_file():
        raise DataError(f"{path}: file not found{where}; {fetch_hint(path.parent.name)}")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... on corrupt files
        raise DataError(f"{path}: could not be read as a MATLAB .mat file ({type(e).__name__}: {e}); "
                        f"the file may be truncated or corrupt, delete it and fetch it again{where}") from e


def _mat_path(root: Path, file: str, url: str, download: bool) -> Path:
    """The .mat file in root, downloaded first when missing and download is True."""
    path = root / file
    if not path.is_file():
        if not download:
            raise DataError(f"{path}: file not found. Get it from {url} into {root}, "
                            f"or set dataset.download=true to download it; {fetch_hint(root.name)}")
        download_file(url, path)
    return path


def load_faces(root: str | Path, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """FACES train (first columns) and test (last columns) as float32 rows (n, 625).

    The file was written by MATLAB, which stores each 25x25 image column by column; the rows
    returned are row-major images, like every other data set's, so nothing downstream (figures)
    needs to know. A fully connected autoencoder is indifferent to the pixel order.
    """
    path = _mat_path(Path(root), FACES_FILE, FACES_URL, download)
    array = load_mat_array(path, FACES_KEY, FACES_SHAPE, FACES_URL)

    def rows(columns: np.ndarray) -> np.ndarray:
        images = columns.T.reshape(-1, FACES_SIDE, FACES_SIDE).transpose(0, 2, 1)
        return np.ascontiguousarray(images.reshape(images.shape[0], -1), dtype=np.float32)

    return rows(array[:, :FACES_N_TRAIN]), rows(array[:, array.shape[1] - FACES_N_TEST:])


def load_curves(root: str | Path, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CURVES train and test as float32 rows (n, 784), values in [0, 1]."""
    path = _mat_path(Path(root), CURVES_FILE, CURVES_URL, download)
    data = read_mat(path, CURVES_URL)
    arrays = [load_mat_array(path, key, shape, CURVES_URL, value_range=(0.0, 1.0), data=data)
              for key, shape in ((CURVES_TRAIN_KEY, CURVES_TRAIN_SHAPE), (CURVES_TEST_KEY, CURVES_TEST_SHAPE))]
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays)
