"""Compose the runner's Hydra config in-process (tests, the demo, reproduce, the speed bench).

The same `configs/` tree and override syntax as the command line, without starting a Hydra app.
"""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train") -> DictConfig:
    """The resolved-on-access config for `python -m benchmarks.train <overrides>`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))
