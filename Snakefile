# The companion's pipeline. Every notebook of the book is executed by the same
# runner (nona.runner: jupytext -> papermill -> atomic publish), then the site
# is built strictly. Profiles (profiles/<name>/config.yaml) set `profile`:
#   quick  CPU, the embedded datasets, frozen cached features, 3 seeds (make book)
#   paper  GPUs, the paper's ten datasets, end-to-end fine-tuning, 10 seeds,
#          one job per (dataset, seed) so that a cluster runs them in parallel
#   smoke  tiny settings of every notebook, used by the tests (no site build)
import glob
import json
import os
import sys

PROFILE = config.get("profile", "quick")
BUILD = os.environ.get("NONA_BUILD", "build")
PAPER_DATASETS = [
    "rsna-bone-age", "medsegbench-brifiseg", "adresso", "coughvid", "nosemic",
    "udacity", "pitchfork", "houses", "books", "austin",
]
PROFILES = {
    "quick": {
        "datasets": ["digits-rotation", "vader-valence", "heart-rate-audio"],
        "finetune": {"seeds": [0, 1, 2], "max_epochs": 60, "patience": 10, "device": "cpu"},
        "results": {"umap_dataset": "digits-rotation"},
        "per_seed_jobs": False,
        "site": True,
    },
    "paper": {
        "datasets": PAPER_DATASETS,
        "finetune": {"seeds": list(range(10)), "max_epochs": 1000, "patience": 10, "device": "cuda",
                     "backbone_trainable": True},
        "results": {"umap_dataset": "rsna-bone-age"},
        "per_seed_jobs": True,
        "site": True,
    },
    "smoke": {
        "datasets": ["synthetic-2d"],
        "finetune": {"seeds": [0, 1], "max_epochs": 3, "patience": 2, "device": "cpu", "batch_size": 64},
        "results": {"umap_dataset": "synthetic-2d"},
        "per_seed_jobs": False,
        "site": False,
    },
}
if PROFILE not in PROFILES:
    raise ValueError(f"unknown profile {PROFILE!r}; expected one of {', '.join(PROFILES)}")
SETTINGS = PROFILES[PROFILE]
DATASETS = SETTINGS["datasets"]

# Notebooks of the book that run once per profile: name -> parameters per
# profile. Each runs from notebooks/<name>.md into build/executed/<name>.ipynb.
BOOK_NOTEBOOKS = {
    "method": {},
    "statistics": {},
    "datasets": {},
    "theory": {},
    "synthetic_surfaces": {"smoke": {"n_train": 200, "n_test": 100, "grid_size": 20, "max_epochs": 3, "hidden": 16}},
    "softstep_shapes": {"smoke": {"n_points": 200, "max_epochs": 3, "n_curves": 3}},
    "flops": {"smoke": {"max_log2_n": 6, "max_log2_n_timed": 6, "max_log2_d": 6, "fit_points": 2, "repeats": 1}, "paper": {"max_log2_n_timed": 12, "repeats": 10}},
}


def as_json(parameters):
    return json.dumps(parameters, sort_keys=True)


def execute(source, output, parameters, log, title=None):
    """Execute one notebook with nona.runner; on failure show the log's tail and fail the job."""
    import subprocess
    import sys
    from pathlib import Path

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    # One BLAS/OpenMP thread per job: Snakemake runs jobs side by side on the
    # cores, and oversubscribed torch threads made feature extraction ~10x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        command = [sys.executable, "-m", "nona.runner", source, output, "--parameters-json", as_json(parameters)]
        if title:
            command += ["--title", title]
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = "\n".join(Path(log).read_text().splitlines()[-60:])
        raise RuntimeError(f"{source} failed (full log: {log}):\n{tail}")


# Tools of the environment that runs Snakemake (the project's .venv), whatever PATH says.
JUPYTER_BOOK = os.path.join(os.path.dirname(sys.executable), "jupyter-book")

EXECUTED = [f"{BUILD}/executed/{name}.ipynb" for name in BOOK_NOTEBOOKS]
EXECUTED += [f"{BUILD}/executed/finetune-{d}.ipynb" for d in DATASETS]
EXECUTED.append(f"{BUILD}/executed/results.ipynb")
# Statistics chapter, part 2: the same analysis on this build's own Table 1.
if len(DATASETS) >= 2:
    EXECUTED.append(f"{BUILD}/executed/statistics-build.ipynb")
EXECUTED.append(f"{BUILD}/executed/home.ipynb")
# The gallery lists every published figure, so it runs after every other notebook.
GALLERY = f"{BUILD}/executed/gallery.ipynb"


rule all:
    input:
        "_build/html/index.html" if SETTINGS["site"] else EXECUTED + [GALLERY],


rule notebook:
    input:
        "notebooks/{name}.md",
    output:
        f"{BUILD}/executed/{{name}}.ipynb",
    log:
        f"{BUILD}/logs/{{name}}.log",
    wildcard_constraints:
        name="|".join(BOOK_NOTEBOOKS) or "no-notebook",
    params:
        parameters=lambda wc: BOOK_NOTEBOOKS[wc.name].get(PROFILE, {}),
    run:
        execute(input[0], output[0], params.parameters, log[0])


def finetune_title(dataset):
    from nona.data import get_manifest

    return f"Fine-tuning: {get_manifest(dataset)['title']}"


def finetune_parameters(dataset, seeds=None):
    parameters = {"dataset": dataset, "profile": PROFILE, **SETTINGS["finetune"]}
    if seeds is not None:
        parameters["seeds"] = seeds
    return parameters


# Paper profile: one job per (dataset, seed) with a GPU each; the per-dataset
# notebook then finds every seed complete and only tabulates and plots.
rule finetune_seed:
    input:
        "notebooks/finetune.md",
    output:
        f"{BUILD}/executed/seeds/finetune-{{dataset}}-seed{{seed}}.ipynb",
    log:
        f"{BUILD}/logs/finetune-{{dataset}}-seed{{seed}}.log",
    resources:
        gpu=1,
    run:
        execute(input[0], output[0], finetune_parameters(wildcards.dataset, [int(wildcards.seed)]), log[0])


rule finetune:
    input:
        "notebooks/finetune.md",
        lambda wc: [f"{BUILD}/executed/seeds/finetune-{wc.dataset}-seed{s}.ipynb" for s in SETTINGS["finetune"]["seeds"]]
        if SETTINGS["per_seed_jobs"] else [],
    output:
        f"{BUILD}/executed/finetune-{{dataset}}.ipynb",
    log:
        f"{BUILD}/logs/finetune-{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(DATASETS),
    run:
        execute(input[0], output[0], finetune_parameters(wildcards.dataset), log[0], title=finetune_title(wildcards.dataset))


rule results:
    input:
        "notebooks/results.md",
        [f"{BUILD}/executed/finetune-{d}.ipynb" for d in DATASETS],
    output:
        f"{BUILD}/executed/results.ipynb",
    log:
        f"{BUILD}/logs/results.log",
    run:
        execute(input[0], output[0], {"profile": PROFILE, "datasets": DATASETS, **SETTINGS["results"]}, log[0])


rule home:
    input:
        "notebooks/home.md",
        f"{BUILD}/executed/results.ipynb",
    output:
        f"{BUILD}/executed/home.ipynb",
    log:
        f"{BUILD}/logs/home.log",
    run:
        execute(input[0], output[0], {"profile": PROFILE}, log[0])


rule statistics_build:
    input:
        "notebooks/statistics.md",
        f"{BUILD}/executed/results.ipynb",
    output:
        f"{BUILD}/executed/statistics-build.ipynb",
    log:
        f"{BUILD}/logs/statistics-build.log",
    run:
        execute(input[0], output[0], {"results": f"{BUILD}/results/{PROFILE}/table1.csv"}, log[0],
                title="Statistics of this build's results")


rule gallery:
    input:
        "notebooks/gallery.md",
        EXECUTED,
    output:
        GALLERY,
    log:
        f"{BUILD}/logs/gallery.log",
    run:
        execute(input[0], output[0], {}, log[0])


rule site:
    input:
        EXECUTED,
        GALLERY,
        "_config.yml",
        "_toc.yml",
        "book/references.bib",
        sorted(glob.glob("book/*.md")),
    output:
        "_build/html/index.html",
    log:
        f"{BUILD}/logs/site.log",
    shell:
        "mkdir -p build/site && rm -rf _build/html && "
        "{JUPYTER_BOOK} build . --path-output . --builder html -W -n --keep-going > {log} 2>&1 "
        "|| (tail -n 80 {log} >&2; exit 1)"
