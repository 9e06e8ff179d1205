"""The Scale benchmarks (issue 20): tri24es beside its peers and raw baselines, in one run.

    python -m benchmarks.scale [--quick] [--only GROUP ...] [--out DIR]

Nothing here imports tri24es at package level: the peers' workloads (``peer/``) run inside a
separate virtualenv that has only the peers installed, and import this package from source.
"""
