"""Tuning: how a search is run fairly, and how its results are read back.

    protocol.py   the protocol record (trials, seeds, rungs, sampler, overrides), defined once; the
                  reference's protocol per workload; the committed protocol read back off the studies
    space.py      search spaces (search_spaces/<optimizer>.yaml, or the lr around its default)
    sampler.py    TPE with each trial's draws keyed to the study and the trial number
    storage.py    where a study lives (SQLite, PostgreSQL, journal file) and Optuna's heartbeats
    search.py     one search: trials, the winner's seeds, the exported tuned config
    studies.py    reading studies back: the winner, every committed study as plain records
    tuned.py      which tuned config a run uses, and how its setting was found
    scaling.py    how many workers a study's storage serves

Tuning sits above the core (runner, configs, run files) and below reporting and orchestration: it
never starts processes (orchestration's launcher does) and never draws.
"""
