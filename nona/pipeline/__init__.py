"""The companion's pipeline.

Profile configuration, the experiment and the ablation as jobs, run records, the
notebook runner and the command line.
"""
