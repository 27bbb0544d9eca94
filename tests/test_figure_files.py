"""A figure saved through benchmarks.figure_files is the same file whatever the process around it:
another working folder with its own matplotlibrc, another config dir (a fresh font cache), a
SOURCE_DATE_EPOCH; no date or software name inside."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

from benchmarks import figure_files

REPO = Path(__file__).resolve().parents[1]
DRAW = """
import sys
from pathlib import Path
import matplotlib.pyplot as plt
from benchmarks.figure_files import figure_style, save_figure
with figure_style():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2, 3], [545, 80, 55, 51], label="LocoProp-M")
    ax.set_xlabel(r"$\\tau$ (epochs)")
    ax.set_title("MNIST")
    ax.legend()
    save_figure(fig, Path(sys.argv[1]) / "figure", ("png", "pdf", "svg"))
"""


def draw_in_a_subprocess(folder: Path, **env: str) -> dict[str, bytes]:
    folder.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-c", DRAW, str(folder)], cwd=folder, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(REPO), **env})
    return {ext: (folder / f"figure.{ext}").read_bytes() for ext in ("png", "pdf", "svg")}


def test_the_same_figure_gives_the_same_bytes_in_another_process_and_setting(tmp_path):
    plain = draw_in_a_subprocess(tmp_path / "plain", MPLCONFIGDIR=str(tmp_path / "config-a"))
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "matplotlibrc").write_text("font.family: serif\nfont.size: 14\nlines.linewidth: 4\n")
    other = draw_in_a_subprocess(hostile, MPLCONFIGDIR=str(tmp_path / "config-b"),
                                 SOURCE_DATE_EPOCH="1000000000")
    for ext in plain:
        assert plain[ext] == other[ext], ext
    for ext in ("png", "pdf"):
        assert b"CreationDate" not in plain[ext] and b"atplotlib" not in plain[ext], ext
    assert b"DejaVuSans" in plain["pdf"]


def test_text_is_drawn_with_matplotlibs_own_dejavu_sans():
    with figure_files.figure_style():
        assert Path(matplotlib.get_data_path()) in figure_files.bundled_font().parents
        assert matplotlib.rcParams["pdf.fonttype"] == 42 and matplotlib.rcParams["svg.hashsalt"]
