"""The code uses Optuna through its public API only: no private module or name (a module path with an
underscore segment, a trial's or study's private id, a study's private storage) and no SQL on
Optuna's tables, which any Optuna release may change without notice."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("benchmarks", "scripts", "locoprop", "baselines", "tests")
# `[.]` rather than an escaped dot, and the examples below split at the dot, so that a plain grep for the
# private names does not find this file
PRIVATE_OPTUNA = {
    "a private Optuna module or name": re.compile(r"\boptuna(?:[.]\w+)*[.]_"),
    "a private attribute of a trial, study or storage": re.compile(r"[.]_(?:storage|trial_id|study_id)"),
    "SQL on Optuna's tables": re.compile(r"(?i)\b(?:from|join|into|update|table)\s+(?:trials|studies|trial_\w+|"
                                         r"study_\w+|version_info|alembic_version)\b"),
    "raw SQL executed": re.compile(r"[.]execute(?:many|script)?\("),
}


def python_sources() -> list[Path]:
    return [path for folder in SOURCES for path in sorted((REPO / folder).rglob("*.py"))
            if path != Path(__file__).resolve()]


def offences(text: str) -> list[tuple[int, str]]:
    return [(number, what) for number, line in enumerate(text.splitlines(), 1)
            for what, pattern in PRIVATE_OPTUNA.items() if pattern.search(line)]


@pytest.mark.parametrize("line, what", [
    ("from optuna.storages" "._heartbeat import get_heartbeat_thread", "a private Optuna module or name"),
    ("optuna." "_experimental.experimental_func", "a private Optuna module or name"),
    ("storage.record_heartbeat(trial." "_trial_id)", "a private attribute of a trial, study or storage"),
    ("trial.study." "_storage", "a private attribute of a trial, study or storage"),
    ("conn.execute(\"SELECT COUNT(*) FROM trials\")", "SQL on Optuna's tables"),
    ("'select value from trial_values'", "SQL on Optuna's tables"),
    ("conn.execute('SELECT 1')", "raw SQL executed"),
])
def test_the_rule_catches_private_optuna_and_sql(line, what):
    assert (1, what) in offences(line)


def test_public_optuna_passes_the_rule():
    public = ("optuna.storages.fail_stale_trials(study)\n"
              "storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)\n"
              "from optuna.storages.journal import JournalFileBackend\n"
              "study.get_trials(deepcopy=False)  # the trials from the study\n")
    assert offences(public) == []


def test_the_code_uses_only_optunas_public_api():
    found = [f"{path.relative_to(REPO)}:{number}: {what}"
             for path in python_sources() for number, what in offences(path.read_text())]
    assert len(python_sources()) > 50 and found == []
