"""`make data`: download MNIST, FACES, CURVES and the Olivetti faces into ./data (needs internet).

    python -m scripts.download_data [--root data] [--datasets mnist curves]

Each file is validated after download (sha256 for MNIST; keys, shapes and ranges for the .mat
files; key, shape and dtype for the Olivetti faces that faces_synth is generated from), so a bad
download is reported here rather than as a strange loss curve later. docs/data.md says where each
file comes from.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.data import DataError, download_file, read_mat
from benchmarks.synth import OLIVETTI_FILE, OLIVETTI_KEY, OLIVETTI_SHAPE, OLIVETTI_URL, load_olivetti
from benchmarks.workloads import load_dataset, paper_datasets

OLIVETTI = "olivetti"  # the folder faces_synth reads (configs/dataset/faces_synth.yaml, data_dir)


def fetch_olivetti(root: Path) -> Path:
    """Download olivettifaces.mat into root (unless there) and check its key, shape and dtype."""
    path = root / OLIVETTI_FILE
    if not path.is_file():
        download_file(OLIVETTI_URL, path)
    array = read_mat(path, OLIVETTI_URL).get(OLIVETTI_KEY)
    if not isinstance(array, np.ndarray) or array.shape != OLIVETTI_SHAPE or array.dtype != np.uint8:
        got = (array.shape, array.dtype) if isinstance(array, np.ndarray) else type(array).__name__
        raise DataError(f"{path}: expected key {OLIVETTI_KEY!r}, {OLIVETTI_SHAPE} uint8, got {got}; delete it and "
                        f"fetch it again from {OLIVETTI_URL}")
    load_olivetti(path)  # the checks faces_synth itself makes
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data")
    choices = [*paper_datasets(), OLIVETTI]
    parser.add_argument("--datasets", nargs="+", default=choices, choices=choices)
    args = parser.parse_args(argv)
    for name in args.datasets:
        root = Path(args.root) / name
        if name == OLIVETTI:
            print(f"{name}: {OLIVETTI_SHAPE} uint8 faces in {fetch_olivetti(root)} (faces_synth)")
            continue
        data = load_dataset(name, root=str(root), download=True)
        print(f"{name}: {tuple(data.train.shape)} train, {tuple(data.test.shape)} test in {root}")


if __name__ == "__main__":
    main()
