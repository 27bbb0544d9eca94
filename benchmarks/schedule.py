"""Per-epoch learning-rate multipliers.

'official' is the LocoProp notebook's schedule: for epoch index e (0-based) of `epochs`,
    e < warmup:  lr * e / warmup                      (epoch 0 runs at lr 0)
    otherwise:   lr * (1 - (e + 1 - warmup) / (epochs - warmup))
so the last epoch index (epochs - 1) would run at lr 0. The notebook's loop is range(99) with
epochs = 100, so that epoch never happens; `skip_final_epoch: true` (the default) reproduces
this. It matters: with TF1 momentum 0.999 an lr-0 epoch still moves the weights by the
momentum buffer and visibly raises the loss.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

SCHEDULES = ("official", "constant", "cosine")


def lr_factor(name: str, epoch: int, epochs: int, warmup_epochs: int = 0) -> float:
    """Multiplier of the base learning rate for 0-based epoch index `epoch`."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if epochs < 1 or not 0 <= warmup_epochs < epochs:
        raise ValueError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got {epochs}, {warmup_epochs}")
    if epoch < warmup_epochs:
        return epoch / warmup_epochs
    if name == "constant":
        return 1.0
    if name == "official":
        return max(0.0, 1.0 - (epoch + 1 - warmup_epochs) / (epochs - warmup_epochs))
    progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def short_run(name: str, epochs: int, warmup_epochs: int) -> bool:
    """True for runs too short for a warm-up schedule (epochs <= warmup + 1, e.g. `epochs=1` quick
    looks): the official schedule would train them at lr 0 only, or not at all, so the runner
    uses a constant learning rate for them (and says so)."""
    return name != "constant" and epochs <= warmup_epochs + 1


def epochs_to_train(epochs: int, skip_final_epoch: bool, stop_epoch: int | None = None) -> int:
    """How many epochs actually run: `epochs`, less the lr-0 final one if skipped, capped by stop_epoch."""
    n = epochs - 1 if skip_final_epoch else epochs
    if stop_epoch is not None:
        if stop_epoch < 0:
            raise ValueError(f"stop_epoch must be >= 0, got {stop_epoch}")
        n = min(n, stop_epoch)
    return n


@dataclass(frozen=True)
class Schedule:
    """A run's learning-rate schedule: the multiplier of each epoch and how many epochs train."""

    name: str
    epochs: int
    warmup_epochs: int = 0
    skip_final_epoch: bool = False

    @classmethod
    def from_config(cls, cfg, epochs: int) -> "Schedule":
        """The configured schedule, or a constant one (with a warning) for runs too short for it."""
        if short_run(cfg.name, epochs, cfg.warmup_epochs):
            warnings.warn(f"epochs={epochs} is too short for the {cfg.name} schedule with {cfg.warmup_epochs} "
                          "warm-up epochs: using a constant learning rate for this run")
            return cls("constant", epochs)
        schedule = cls(cfg.name, epochs, int(cfg.warmup_epochs), bool(cfg.skip_final_epoch))
        schedule.factor(0)  # validates the name and the warm-up length
        return schedule

    def factor(self, epoch: int) -> float:
        """The multiplier of the base learning rate for 0-based epoch index `epoch`."""
        return lr_factor(self.name, epoch, self.epochs, self.warmup_epochs)

    def trained_epochs(self, stop_epoch: int | None = None) -> int:
        return epochs_to_train(self.epochs, self.skip_final_epoch, stop_epoch)
