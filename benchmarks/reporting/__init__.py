"""Reporting: every table, figure and generated paragraph, from the run files and the studies.

    summary.py        the results table of one group of runs
    figures.py        loss against epochs and time, reconstructions, ablation figures
    statistics.py     the seed test that matches how seeds were drawn (paired or Welch)
    plateau.py        the mean-image plateau of a workload (when a run has stalled)
    tuning_budget.py  the expected best objective after k trials of a study
    sensitivity.py    how much a winner loses off its optimum
    tuning_report.py  the report's part on how hard each optimizer is to tune
    report.py         `make report`: the reference comparison's tables, figures and generated docs

Runs are read through `benchmarks.results`, studies through `benchmarks.tuning.studies`, the
protocol through `benchmarks.tuning.protocol`; formatting lives in `benchmarks.tables`.
"""
