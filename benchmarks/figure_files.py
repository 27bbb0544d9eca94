"""One look and one way to save every figure, so the same data gives the same bytes on any install.

Left to itself matplotlib stamps a file with its version and the date, takes settings from the
user's matplotlibrc and fonts from the system, and (PDF, TrueType) embeds a font subset made by
fontTools. Here every figure is drawn from matplotlib's defaults plus `STYLE`, in the DejaVu Sans
that matplotlib ships (checked: a system copy of another version is refused), with no date or
software name in the files and a fixed SVG hash salt. What remains, the renderer and the font
subsetter, is pinned in constraints-ci.txt (matplotlib, fontTools, Pillow).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.style  # noqa: E402
from matplotlib import font_manager  # noqa: E402

FONT = "DejaVu Sans"
STYLE = {"font.family": "sans-serif", "font.sans-serif": [FONT], "mathtext.fontset": "dejavusans",
         "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 6.5,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.linewidth": 0.6, "lines.linewidth": 1.0,
         "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType: text stays text (journals refuse Type 3)
         "svg.fonttype": "path", "svg.hashsalt": "locoprop-bench", "savefig.dpi": 300}
# No time stamp, version or host in the files: a figure redrawn from the same data is the same file.
METADATA = {"png": {"Software": None},
            "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None},
            "svg": {"Creator": None, "Date": None}}


def bundled_font() -> Path:
    """The file `STYLE` draws text with; an error naming it unless it is matplotlib's own copy."""
    path = Path(font_manager.findfont(font_manager.FontProperties(family=FONT), fallback_to_default=False))
    if Path(matplotlib.get_data_path()) not in path.parents:
        raise RuntimeError(f"font {FONT!r} resolves to {path}, not to matplotlib's bundled copy: "
                           "figures would differ from the committed ones (clear ~/.cache/matplotlib)")
    return path


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """matplotlib's defaults (a matplotlibrc of the user or the folder is ignored) plus `STYLE`."""
    with matplotlib.rc_context():
        matplotlib.style.use("default")
        matplotlib.rcParams.update(STYLE)
        bundled_font()
        yield


def save_figure(fig, stem: Path, formats: tuple[str, ...] = ("png", "pdf"), tight: bool = True) -> list[Path]:
    """`stem`.png, `stem`.pdf, ... written atomically (temporary file + rename), then the figure closed."""
    paths = []
    try:
        for ext in formats:
            path = stem.with_name(f"{stem.name}.{ext}")
            tmp = stem.with_name(f".{stem.name}.{ext}.tmp")
            try:
                fig.savefig(tmp, format=ext, metadata=METADATA[ext], bbox_inches="tight" if tight else None)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
