"""Switchboard's benchmarks: ``python -m bench [--full] [--only NAME,...]``.

Every figure is a ratio or a side-by-side comparison measured in one run on one
machine. The harness starts and stops every server it uses (subprocesses on
127.0.0.1 with ports picked by the kernel), bounds every load in requests and
seconds, and writes bench/results/<name>.json, PNG plots and summary.md.
"""
