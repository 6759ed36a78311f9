# Two commands: `make book` (set up, run the pipeline, build the site) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= quick
export PYTHONHASHSEED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
# The pipeline's tools (snakemake, jupyter-book, the kernel) come from the project's venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup test book site browser-test benchmark gpu-check clean bundle

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: setup
	$(PY) -m pytest

# The pipeline runs every notebook, then builds the site strictly (warnings are errors).
book: setup
	$(VENV)/bin/snakemake --profile profiles/$(PROFILE)

# Rebuild the site from notebooks that were already executed.
site: setup
	$(VENV)/bin/snakemake --profile profiles/$(PROFILE) --forcerun site site

# Needs Debian's chromium and chromium-driver (.ci/run installs them) and a built site.
browser-test: setup
	$(PY) -m pytest -m browser

benchmark: setup
	$(PY) benchmarks/head.py

# One archive of the built site, executed notebooks, figures, records, environment lock and
# citation, with SHA-256 checksums: dist/nona-companion-<version>-<profile>.tar.gz. Needs `make book` first.
bundle: setup
	$(PY) -m nona.pipeline.bundle --profile $(PROFILE)

# On a CUDA machine: the smoke pipeline, end-to-end fine-tuning of digits-rotation, throughput, memory,
# an estimate of the paper profile's GPU-hours (benchmarks/gpu_check.py). Fails with a message without CUDA.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf build _build
