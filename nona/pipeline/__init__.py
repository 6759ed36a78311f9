"""The companion's pipeline: profile configuration, the experiment and the ablation as jobs, run records, the notebook runner and the command line."""
