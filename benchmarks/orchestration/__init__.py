"""Orchestration: what a command will run, what it will cost, and running it.

    plan.py          plans (ordered runs priced by the bench table) and the executors that run them:
                     in this process, local processes with deadlines, or submitit jobs (SLURM)
    launch.py        a search's or a campaign's workers: local processes or submitit jobs
    reproduce.py     the paper's comparison with the shipped tuned configs
    ablations.py     LocoProp's ablation grids (Hydra's override grammar)
    campaign.py      the long resumable plans of searches and runs behind the committed reference
    gpu_campaign.py  the GPU comparison inside a time budget, everything in one folder
    compare.py       a new optimizer: what it is, how it is searched, what it costs
    compare_run.py   a new optimizer against the committed reference: searches, tables, figure

Orchestration is the top floor of the library: it uses tuning and reporting, and only the entry
points in scripts/ use it.
"""
