"""Test-session setup: the real data sets of the workplace's shared folder, when it is there.

The package itself never looks outside the repository for data (its default is ./data/<name>, or
$LOCOPROP_DATA/<name>); the tests point $LOCOPROP_DATA at `../shared/data` (or at
$LOCOPROP_SHARED/data) when that folder exists and no other data folder was chosen, so the tests
of real MNIST and of the Olivetti-based generator run there and skip elsewhere.
"""
import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("LOCOPROP_SHARED") or Path(__file__).resolve().parents[2] / "shared") / "data"

if SHARED_DATA.is_dir():
    os.environ.setdefault("LOCOPROP_DATA", str(SHARED_DATA))
