"""Formatting and ranking shared by the reference report (scripts/report.py) and a comparison of a
new optimizer against it (scripts/compare.py): one way to write a number, to rank rows, to test a gap."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.optimizers import family_of

DASH = "—"


def fmt(value: float, digits: int = 2) -> str:
    return DASH if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def fmt_sig(mean: float, std: float = math.nan, digits: int = 4) -> str:
    """`mean ± std` to `digits` significant figures (std to two), the summary tables' format."""
    if mean is None or not math.isfinite(mean):
        return DASH
    text = f"{mean:.{digits}g}"
    return f"{text} ± {std:.2g}" if std is not None and math.isfinite(std) else text


def fmt_mean_std(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or not math.isfinite(mean):
        return DASH
    return fmt(mean, digits) + (f" ± {std:.{digits}f}" if std is not None and math.isfinite(std) else "")


def ranked(table: pd.DataFrame, primary: str) -> pd.DataFrame:
    """The paper's field (its optimizers and LocoProp's relatives) by mean final train loss, ranked,
    rows without a finished seed last; then the modern family, apart, each with the rank it would
    take in the paper's field (`rank_among`)."""
    column = f"final_{primary}_mean"
    out = table.assign(_key=table[column].fillna(np.inf), _modern=[family_of(o) == "modern" for o in table["optimizer"]])
    out = out.sort_values(["_modern", "_key", "optimizer"])
    field = out.loc[~out["_modern"], "_key"].to_numpy(float)
    out["rank"] = [None] * len(out)
    out["rank_among"] = [None] * len(out)
    position = 0
    for index, row in out.iterrows():
        if not math.isfinite(row["_key"]):
            continue
        if row["_modern"]:
            out.at[index, "rank_among"] = int((field < row["_key"]).sum()) + 1
        else:
            position += 1
            out.at[index, "rank"] = position
    return out.drop(columns=["_key", "_modern"])


def rank_text(row: pd.Series) -> str:
    if row["rank"] is not None and row["rank"] == row["rank"]:
        return str(int(row["rank"]))
    if row["rank_among"] is not None and row["rank_among"] == row["rank_among"]:
        return f"({int(row['rank_among'])})"
    return DASH


def md_row(cells) -> str:
    """One row of a GitHub markdown table (cells already formatted)."""
    return "| " + " | ".join(cells) + " |"


def md_head(head: list[str]) -> list[str]:
    """The header row and the separator of a GitHub markdown table: every generated table starts here."""
    return [md_row(head), "|" + "---|" * len(head)]


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (cells as they are; `|` escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|")
    rows = [md_row(cell(v) for v in row) for row in frame.itertuples(index=False)]
    return "\n".join([*md_head([cell(c) for c in frame.columns]), *rows])
