"""`make data`: download MNIST, FACES and CURVES into ./data (needs internet).

Each file is validated after download (sha256 for MNIST; keys, shapes and ranges for the .mat
files), so a bad download is reported here rather than as a strange loss curve later.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.workloads import load_dataset, paper_datasets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="data")
    real = paper_datasets()
    parser.add_argument("--datasets", nargs="+", default=real, choices=real)
    args = parser.parse_args(argv)
    for name in args.datasets:
        root = Path(args.root) / name
        data = load_dataset(name, root=str(root), download=True)
        print(f"{name}: {tuple(data.train.shape)} train, {tuple(data.test.shape)} test in {root}")


if __name__ == "__main__":
    main()
