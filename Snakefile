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
import shlex
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
        "ablation": {"dataset": "digits-rotation", "seeds": [0, 1, 2], "values": {}, "frozen": True},
        # One job per (dataset, seed) balances the two cores better than one per dataset.
        "per_seed_jobs": True,
        "site": True,
    },
    "paper": {
        "datasets": PAPER_DATASETS,
        "finetune": {"seeds": list(range(10)), "max_epochs": 1000, "patience": 10, "device": "cuda",
                     "backbone_trainable": True},
        "results": {"umap_dataset": "rsna-bone-age"},
        "ablation": {"dataset": "rsna-bone-age", "seeds": [0, 1, 2], "values": {}, "frozen": False},
        "per_seed_jobs": True,
        "site": True,
    },
    "smoke": {
        "datasets": ["synthetic-2d"],
        "finetune": {"seeds": [0, 1], "max_epochs": 3, "patience": 2, "device": "cpu"},
        "results": {"umap_dataset": "synthetic-2d"},
        # Two candidates for most stages keep the smoke test short.
        "ablation": {"dataset": "synthetic-2d", "seeds": [0, 1], "frozen": True, "values": {
            "similarity": ["l2", "cos", "rbf"], "softstep": ["none", "s2-pointwise"], "batch_size": [32, 64],
            "embed_dim": [25], "dense_embed_dim": [25], "dense_batch_size": [32, 64]}},
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
    "diabetes": {"smoke": {"n_splits": 2, "max_epochs": 3}},
}


def as_json(parameters):
    return json.dumps(parameters, sort_keys=True)


def python_command(arguments):
    """Shell command: ``python -m <arguments>`` with one thread (each rule's shell sends it to its log, see JOB)."""
    # A shell job runs in a thread of Snakemake, whereas a job with a run block
    # would first start a second Snakemake process (seconds per job, and the
    # ablation has ~90 jobs). One BLAS/OpenMP thread per job: Snakemake runs
    # jobs side by side on the cores, and oversubscribed torch threads made
    # feature extraction ~10x slower.
    command = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", *arguments])
    return f"OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 {command}"


def notebook_command(source, output, parameters, title=None):
    """Shell command that executes one notebook with nona.runner (see python_command)."""
    arguments = ["nona.runner", source, output, "--parameters-json", as_json(parameters)]
    return python_command(arguments + (["--title", title] if title else []))


# The shell of every job: its command, output to its log; on failure the log's tail.
JOB = "{params.command} > {log:q} 2>&1 || (tail -n 60 {log:q} >&2; exit 1)"


# Tools of the environment that runs Snakemake (the project's .venv), whatever PATH says.
JUPYTER_BOOK = os.path.join(os.path.dirname(sys.executable), "jupyter-book")

EXECUTED = [f"{BUILD}/executed/{name}.ipynb" for name in BOOK_NOTEBOOKS]
EXECUTED += [f"{BUILD}/executed/finetune-{d}.ipynb" for d in DATASETS]
EXECUTED.append(f"{BUILD}/executed/results.ipynb")
EXECUTED.append(f"{BUILD}/executed/ablation.ipynb")
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
        command=lambda wc, input, output: notebook_command(input[0], output[0], BOOK_NOTEBOOKS[wc.name].get(PROFILE, {})),
    shell:
        JOB


# The serialized ablation (Section 6.1, Appendix B): one job per (stage,
# candidate, seed); a stage's jobs need the previous stage's winner.json, so
# they start only once it is selected. The main comparison then uses the
# selected configuration (selected.json) on every dataset of the profile.
from nona.ablation import ablation_plan, get_stage, previous_stage, run_record_path, selected_path, winner_path

ABLATION = SETTINGS["ablation"]
ABLATION_ROOT = f"{BUILD}/ablation/{PROFILE}/{ABLATION['dataset']}"
ABLATION_PLAN = ablation_plan(ABLATION["values"])
ABLATION_FEATURES = f"{ABLATION_ROOT}/features.pt" if ABLATION["frozen"] else None
SELECTED = str(selected_path(ABLATION_ROOT))
LAST_NONA_STAGE = [s for s in ABLATION_PLAN if s.serial][-1].name


def winner(stage_name):
    return str(winner_path(ABLATION_ROOT, stage_name))


def ablation_runs(stage_name):
    stage = get_stage(ABLATION_PLAN, stage_name)
    return [str(run_record_path(ABLATION_ROOT, stage.name, label, seed)) for label in stage.labels() for seed in ABLATION["seeds"]]


def ablation_run_arguments(wc):
    train = {k: v for k, v in SETTINGS["finetune"].items() if k != "seeds"}
    arguments = ["nona.ablation", "run", "--root", ABLATION_ROOT, "--values-json", as_json(ABLATION["values"]),
                 "--stage", wc.stage, "--candidate", wc.candidate, "--seed", wc.seed,
                 "--dataset", ABLATION["dataset"], "--profile", PROFILE, "--train-json", as_json(train)]
    return arguments + (["--features", ABLATION_FEATURES] if ABLATION_FEATURES else [])


def ablation_run_inputs(wc):
    # paper-choice runs after the last stage so that it can reuse an identical run.
    before = LAST_NONA_STAGE if wc.stage == "paper-choice" else getattr(previous_stage(ABLATION_PLAN, wc.stage), "name", None)
    inputs = [winner(before)] if before else []
    return inputs + ([ABLATION_FEATURES] if ABLATION_FEATURES else [])


rule ablation_features:
    output:
        f"{ABLATION_ROOT}/features.pt",
    log:
        f"{BUILD}/logs/ablation/features.log",
    params:
        command=lambda wc, output: python_command(["nona.ablation", "features", "--dataset", ABLATION["dataset"], "--out", output[0]]),
    shell:
        JOB


rule ablation_run:
    input:
        ablation_run_inputs,
    output:
        str(run_record_path(ABLATION_ROOT, "{stage}", "{candidate}", "{seed}")),
    log:
        f"{BUILD}/logs/ablation/{{stage}}-{{candidate}}-seed{{seed}}.log",
    wildcard_constraints:
        stage="|".join([s.name for s in ABLATION_PLAN] + ["paper-choice"]),
        candidate="[^/]+",
        seed=r"\d+",
    resources:
        gpu=1,
    params:
        command=lambda wc: python_command(ablation_run_arguments(wc)),
    shell:
        JOB


rule ablation_select:
    input:
        lambda wc: ablation_runs(wc.stage),
    output:
        winner("{stage}"),
    log:
        f"{BUILD}/logs/ablation/{{stage}}-winner.log",
    wildcard_constraints:
        stage="|".join(s.name for s in ABLATION_PLAN),
    params:
        command=lambda wc: python_command(["nona.ablation", "select", "--root", ABLATION_ROOT, "--values-json", as_json(ABLATION["values"]),
                                           "--stage", wc.stage, "--seeds", *ABLATION["seeds"]]),
    shell:
        JOB


rule ablation_selected:
    input:
        winner(LAST_NONA_STAGE),
        winner("dense-grid"),
    output:
        SELECTED,
    log:
        f"{BUILD}/logs/ablation/selected.log",
    params:
        command=python_command(["nona.ablation", "selected", "--root", ABLATION_ROOT, "--values-json", as_json(ABLATION["values"]),
                                "--dataset", ABLATION["dataset"], "--profile", PROFILE]),
    shell:
        JOB


rule ablation:
    input:
        "notebooks/ablation.md",
        SELECTED,
        [winner(s.name) for s in ABLATION_PLAN],
        ablation_runs("paper-choice"),
    output:
        f"{BUILD}/executed/ablation.ipynb",
    log:
        f"{BUILD}/logs/ablation.log",
    params:
        command=lambda wc, input, output: notebook_command(
            input[0], output[0], {"dataset": ABLATION["dataset"], "profile": PROFILE, "seeds": ABLATION["seeds"], "values": ABLATION["values"]}),
    shell:
        JOB


def finetune_title(dataset):
    from nona.data import get_manifest

    return f"Fine-tuning: {get_manifest(dataset)['title']}"


def finetune_parameters(dataset, seeds=None):
    parameters = {"dataset": dataset, "profile": PROFILE, "ablation": SELECTED, **SETTINGS["finetune"]}
    if seeds is not None:
        parameters["seeds"] = seeds
    return parameters


# Paper and quick profiles: one job per (dataset, seed) (with a GPU each in the paper profile); the per-dataset
# notebook then finds every seed complete and only tabulates and plots.
rule finetune_seed:
    input:
        "notebooks/finetune.md",
        SELECTED,
    output:
        f"{BUILD}/executed/seeds/finetune-{{dataset}}-seed{{seed}}.ipynb",
    log:
        f"{BUILD}/logs/finetune-{{dataset}}-seed{{seed}}.log",
    resources:
        gpu=1,
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0], finetune_parameters(wc.dataset, [int(wc.seed)])),
    shell:
        JOB


rule finetune:
    input:
        "notebooks/finetune.md",
        SELECTED,
        lambda wc: [f"{BUILD}/executed/seeds/finetune-{wc.dataset}-seed{s}.ipynb" for s in SETTINGS["finetune"]["seeds"]]
        if SETTINGS["per_seed_jobs"] else [],
    output:
        f"{BUILD}/executed/finetune-{{dataset}}.ipynb",
    log:
        f"{BUILD}/logs/finetune-{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(DATASETS),
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0], finetune_parameters(wc.dataset),
                                                           title=finetune_title(wc.dataset)),
    shell:
        JOB


rule results:
    input:
        "notebooks/results.md",
        [f"{BUILD}/executed/finetune-{d}.ipynb" for d in DATASETS],
    output:
        f"{BUILD}/executed/results.ipynb",
    log:
        f"{BUILD}/logs/results.log",
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0],
                                                           {"profile": PROFILE, "datasets": DATASETS, **SETTINGS["results"]}),
    shell:
        JOB


rule home:
    input:
        "notebooks/home.md",
        f"{BUILD}/executed/results.ipynb",
    output:
        f"{BUILD}/executed/home.ipynb",
    log:
        f"{BUILD}/logs/home.log",
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0], {"profile": PROFILE}),
    shell:
        JOB


rule statistics_build:
    input:
        "notebooks/statistics.md",
        f"{BUILD}/executed/results.ipynb",
    output:
        f"{BUILD}/executed/statistics-build.ipynb",
    log:
        f"{BUILD}/logs/statistics-build.log",
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0], {"results": f"{BUILD}/results/{PROFILE}/table1.csv"},
                                                           title="Statistics of this build's results"),
    shell:
        JOB


rule gallery:
    input:
        "notebooks/gallery.md",
        EXECUTED,
    output:
        GALLERY,
    log:
        f"{BUILD}/logs/gallery.log",
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0], {}),
    shell:
        JOB


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
