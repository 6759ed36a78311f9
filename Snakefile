# The companion's pipeline. Every notebook of the book is executed by the same
# runner (nona.pipeline.runner: jupytext -> papermill -> atomic publish), then the site
# is built strictly. Snakemake's profiles (profiles/<name>/config.yaml) set
# `profile=<name>`; what that profile runs is in profiles/<name>/pipeline.yaml:
#   quick  CPU, the embedded datasets, 3 seeds (make book)
#   paper  GPUs, the paper's ten datasets, end-to-end fine-tuning, 10 seeds
#   smoke  tiny settings of every notebook, used by the tests (no site build)
# Every training run is a job whose declared outputs are its records: one job
# per (dataset, seed) trains every arm of the experiment, one job per (ablation
# stage, seed) every candidate of the stage; notebooks then present the records.
import glob
import json
import os
import shlex
import sys

from nona.pipeline.config import JOB_LAYOUT_SETTINGS, check_profile, dataset_finetune_settings, load_profile
from nona.pipeline.config import training_settings as dataset_training_settings

PROFILE = check_profile(config.get("profile", "quick"))
BUILD = os.environ.get("NONA_BUILD", "build")
# Everything this profile runs: profiles/<profile>/pipeline.yaml (see nona.pipeline.config).
SETTINGS = load_profile(PROFILE)
DATASETS = SETTINGS["datasets"]
# Notebooks of the book that run once per profile: name -> parameters. Each runs from
# notebooks/<name>.md into build/executed/<name>.ipynb.
BOOK_NOTEBOOKS = SETTINGS["notebooks"]


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
    # NONA_PROFILE tells a notebook's record_numbers (nona.paper.published) which build it belongs to.
    return f"NONA_PROFILE={PROFILE} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 {command}"


def notebook_command(source, output, parameters, title=None, rerun=None):
    """Shell command that executes one notebook with nona.pipeline.runner (see python_command).

    ``rerun``: the parameters of the page's "Re-run this page" command, when they differ (output folders).
    """
    arguments = ["nona.pipeline.runner", source, output, "--parameters-json", as_json(parameters)]
    arguments += ["--title", title] if title else []
    return python_command(arguments + (["--rerun-json", as_json(rerun)] if rerun is not None else []))


def rerun_folders(parameters):
    """``parameters`` with the folders a page writes runs into moved under build/rerun (a reader's re-run)."""
    moved = {k: v.replace(f"{BUILD}/", "build/rerun/", 1) for k, v in parameters.items()
             if k in ("runs_dir", "frozen_runs_dir") and isinstance(v, str) and v}
    return {**parameters, **moved}


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
# The Reproduction report collects the numbers every other page published, so it runs after them.
REPORTED = list(EXECUTED)
REPRODUCTION = f"{BUILD}/executed/reproduction.ipynb"
EXECUTED.append(REPRODUCTION)
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
        command=lambda wc, input, output: notebook_command(input[0], output[0], BOOK_NOTEBOOKS[wc.name] or {}),
    shell:
        JOB


# The serialized ablation (Section 6.1, Appendix B): one job per (stage,
# candidate, seed); a stage's jobs need the previous stage's winner.json, so
# they start only once it is selected. The main comparison then uses the
# selected configuration (selected.json) on every dataset of the profile.
from nona.pipeline.ablation import ablation_plan, candidate_record_path, get_stage, paper_choice_stage, previous_stage, selected_path, winner_path
from nona.pipeline.experiment import ARMS, FROZEN_COMPARISON_ARMS, check_warm_start, effective_trainable_layers

ABLATION = SETTINGS["ablation"]
# The training settings every run of this profile shares (the seeds are per job).
FINETUNE_SETTINGS = {k: v for k, v in SETTINGS["finetune"].items() if k not in JOB_LAYOUT_SETTINGS}
# Per-dataset changes to the fine-tuning settings (e.g. which datasets fine-tune a backbone block).
FINETUNE_OVERRIDES = SETTINGS.get("finetune_overrides") or {}
unknown_overrides = sorted(set(FINETUNE_OVERRIDES) - set(DATASETS))
if unknown_overrides:
    raise ValueError(f"finetune_overrides names datasets the profile does not run: {unknown_overrides}")


def dataset_settings(dataset):
    """The profile's fine-tuning settings for one dataset (seeds included), its overrides applied."""
    return dataset_finetune_settings(SETTINGS, dataset)


def frozen_comparison(dataset):
    return bool(dataset_settings(dataset).get("frozen_comparison", False))


def training_settings(dataset):
    """The settings one dataset's runs train with (what the jobs and the notebook receive)."""
    return dataset_training_settings(SETTINGS, dataset)


def job_groups(dataset):
    """The jobs of one (dataset, seed): group name -> (arms, the arms it also trains on frozen features).

    An arm in ``own_job_arms`` that fine-tunes a backbone block trains in a job of its own (the
    long runs: on 2 cores two of them then run side by side instead of queueing behind one job
    that trains every arm); the other arms and the frozen comparison share one job ("rest").
    With ``warm_start`` an arm's own job also trains its frozen run, which the fine-tuned run
    starts from. Without ``own_job_arms`` (the paper profile) every arm of a seed trains in one job ("all").
    """
    settings = dataset_settings(dataset)
    requested = settings.get("own_job_arms") or []
    unknown = sorted(set(requested) - set(ARMS))
    if unknown:
        raise ValueError(f"own_job_arms names unknown arms {unknown}; valid values are: {', '.join(ARMS)}")
    tuned = settings.get("trainable_arms") or list(ARMS)
    finetunes = effective_trainable_layers(dataset, settings.get("trainable_layers", 0)) != 0
    warm = check_warm_start(settings.get("warm_start")) is not None
    if warm and finetunes and not frozen_comparison(dataset):
        raise ValueError(f"{dataset}: warm_start starts each fine-tuned run from its frozen run; set frozen_comparison: true")
    own = [arm for arm in requested if arm in tuned] if finetunes else []
    frozen = list(FROZEN_COMPARISON_ARMS) if frozen_comparison(dataset) else []
    groups = {arm: ([arm], [arm] if warm and arm in frozen else []) for arm in own}
    rest = [arm for arm in frozen if not (warm and arm in own)]
    groups["rest" if own else "all"] = ([arm for arm in ARMS if arm not in own], rest)
    return groups
RUNS_DIR = f"{BUILD}/runs/{PROFILE}"
# The paper's two heads trained again on frozen features (trainable_layers=0, same seeds): what fine-tuning adds.
FROZEN_COMPARISON = bool(SETTINGS["finetune"].get("frozen_comparison", False))
FROZEN_RUNS_DIR = f"{BUILD}/runs/{PROFILE}-frozen"
# An ablation on saved frozen features trains no backbone block, and its records say so.
ABLATION_TRAIN_SETTINGS = {k: v for k, v in FINETUNE_SETTINGS.items() if k != "trainable_arms"}
if ABLATION["frozen"]:
    ABLATION_TRAIN_SETTINGS["trainable_layers"] = 0
ABLATION_ROOT = f"{BUILD}/ablation/{PROFILE}/{ABLATION['dataset']}"
ABLATION_PLAN = ablation_plan(ABLATION["values"])
ABLATION_FEATURES = f"{ABLATION_ROOT}/features.pt" if ABLATION["frozen"] else None
SELECTED = str(selected_path(ABLATION_ROOT))
LAST_NONA_STAGE = [s for s in ABLATION_PLAN if s.serial][-1].name


def winner(stage_name):
    return str(winner_path(ABLATION_ROOT, stage_name))


def ablation_records(stage_name, seeds=None):
    stage = get_stage(ABLATION_PLAN, stage_name)
    return [str(candidate_record_path(ABLATION_ROOT, stage.name, label, seed))
            for label in stage.labels() for seed in (ABLATION["seeds"] if seeds is None else seeds)]


def ablation_run_arguments(stage, seed):
    arguments = ["nona.pipeline.ablation", "run", "--root", ABLATION_ROOT, "--values-json", as_json(ABLATION["values"]),
                 "--stage", stage, "--seed", seed,
                 "--dataset", ABLATION["dataset"], "--profile", PROFILE, "--train-json", as_json(ABLATION_TRAIN_SETTINGS)]
    return arguments + (["--features", ABLATION_FEATURES] if ABLATION_FEATURES else [])


def ablation_stage_inputs(stage):
    # paper-choice runs after the last stage so that it can reuse an identical run.
    before = LAST_NONA_STAGE if stage == "paper-choice" else getattr(previous_stage(ABLATION_PLAN, stage), "name", None)
    inputs = [winner(before)] if before else []
    return inputs + ([ABLATION_FEATURES] if ABLATION_FEATURES else [])


def stage_of(record):
    """The ablation stage of a candidate record path (<root>/<stage>/<candidate>/seed<k>.json)."""
    return os.path.basename(os.path.dirname(os.path.dirname(record)))


# Priorities: the ablation's serial stages, then the dense grid, then the jobs that fine-tune
# (see below) are the critical path of a build; the once-per-profile notebooks (priority 0)
# fill the cores around them.
rule ablation_features:
    priority: 50
    output:
        f"{ABLATION_ROOT}/features.pt",
    log:
        f"{BUILD}/logs/ablation/features.log",
    params:
        command=lambda wc, output: python_command(["nona.pipeline.ablation", "features", "--dataset", ABLATION["dataset"], "--out", output[0]]),
    shell:
        JOB


# One job per (stage, seed) trains every candidate of the stage on that seed (a
# process per candidate spent more time starting Python and torch than training).
for _stage in [*ABLATION_PLAN, paper_choice_stage()]:
    rule:
        name:
            f"ablation_{_stage.name.replace('-', '_')}"
        input:
            ablation_stage_inputs(_stage.name),
        output:
            [str(candidate_record_path(ABLATION_ROOT, _stage.name, label, "{seed}")) for label in _stage.labels()],
        log:
            f"{BUILD}/logs/ablation/{_stage.name}-seed{{seed}}.log",
        wildcard_constraints:
            seed=r"\d+",
        priority: 50 if _stage.serial else 45 if _stage.name == "dense-grid" else 10
        resources:
            gpu=1,
        params:
            command=lambda wc, output: python_command(ablation_run_arguments(stage_of(output[0]), wc.seed)),
        shell:
            JOB


rule ablation_select:
    priority: 50
    input:
        lambda wc: ablation_records(wc.stage),
    output:
        winner("{stage}"),
    log:
        f"{BUILD}/logs/ablation/{{stage}}-winner.log",
    wildcard_constraints:
        stage="|".join(s.name for s in ABLATION_PLAN),
    params:
        command=lambda wc: python_command(["nona.pipeline.ablation", "select", "--root", ABLATION_ROOT, "--values-json", as_json(ABLATION["values"]),
                                           "--stage", wc.stage, "--seeds", *ABLATION["seeds"]]),
    shell:
        JOB


rule ablation_selected:
    priority: 50
    input:
        winner(LAST_NONA_STAGE),
        winner("dense-grid"),
    output:
        SELECTED,
    log:
        f"{BUILD}/logs/ablation/selected.log",
    params:
        command=python_command(["nona.pipeline.ablation", "selected", "--root", ABLATION_ROOT, "--values-json", as_json(ABLATION["values"]),
                                "--dataset", ABLATION["dataset"], "--profile", PROFILE]),
    shell:
        JOB


rule ablation:
    input:
        "notebooks/ablation.md",
        SELECTED,
        [winner(s.name) for s in ABLATION_PLAN],
        ablation_records("paper-choice"),
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


def finetune_parameters(dataset):
    return {"dataset": dataset, "profile": PROFILE, "ablation": SELECTED, "runs_dir": f"{RUNS_DIR}/{dataset}",
            "frozen_runs_dir": f"{FROZEN_RUNS_DIR}/{dataset}" if frozen_comparison(dataset) else "",
            # What the jobs ran (TrainConfig's defaults where the profile is silent), so the notebook trains nothing again.
            "trainable_layers": 0, "trainable_arms": list(ARMS), **training_settings(dataset),
            "seeds": dataset_settings(dataset)["seeds"], "frozen_comparison": frozen_comparison(dataset)}


def run_records(dataset, seed):
    """The records the jobs of one (dataset, seed) write, the frozen-backbone comparison's included."""
    return [record for group in job_groups(dataset) for record in group_records(dataset, group, seed)]


def dataset_of(record):
    """The dataset of a run record path (<runs>/<dataset>/<arm>/seed<k>.json)."""
    return os.path.basename(os.path.dirname(os.path.dirname(record)))


def group_records(dataset, group, seed):
    """The records the job of one (dataset, group, seed) writes."""
    arms, frozen = job_groups(dataset)[group]
    records = [f"{RUNS_DIR}/{dataset}/{arm}/seed{seed}.json" for arm in arms]
    return records + [f"{FROZEN_RUNS_DIR}/{dataset}/{arm}/seed{seed}.json" for arm in frozen]


def group_of(record):
    """The job group whose first record (in its first arm's folder) is ``record``."""
    arm = os.path.basename(os.path.dirname(record))
    return next(group for group, (arms, _) in job_groups(dataset_of(record)).items() if arms[0] == arm)


def finetune_run_arguments(dataset, group, seed, selected):
    arms, frozen = job_groups(dataset)[group]
    arguments = ["nona.pipeline.experiment", "--dataset", dataset, "--profile", PROFILE, "--seed", seed,
                 "--out-dir", f"{RUNS_DIR}/{dataset}", "--ablation", selected, "--arms", *arms,
                 "--settings-json", as_json(training_settings(dataset))]
    if not frozen:
        return arguments
    # The frozen arms are named only where they are not all of them, so the usual command stays as it was.
    named = [] if frozen == list(FROZEN_COMPARISON_ARMS) else ["--frozen-arms", *frozen]
    return arguments + ["--frozen-dir", f"{FROZEN_RUNS_DIR}/{dataset}", *named]


# One job per (dataset, seed) trains every arm of the experiment on that split (with a GPU in the paper
# profile), fine-tuning the backbone's top (trainable_layers), and the frozen-backbone comparison; its
# outputs are the run records. The per-dataset notebook then only tabulates and plots them.
# One rule per dataset: whether a dataset also trains the frozen-backbone comparison (and so
# which records its jobs write) is a per-dataset setting, and a rule's outputs are fixed patterns.
# With own_job_arms, the arms that fine-tune train in jobs of their own (see job_groups). Jobs
# that fine-tune run first: with the ablation's serial stages they are the build's critical path.
for _dataset in DATASETS:
    for _group, (_arms, _frozen) in job_groups(_dataset).items():
        rule:
            name:
                f"finetune_runs_{_dataset.replace('-', '_')}" + ("" if _group == "all" else f"_{_group.replace('-', '_')}")
            input:
                SELECTED,
            output:
                group_records(_dataset, _group, "{seed}"),
            log:
                f"{BUILD}/logs/runs/{_dataset}" + ("" if _group == "all" else f"-{_group}") + "-seed{seed}.log",
            wildcard_constraints:
                seed=r"\d+",
            priority: 20 if _group in ("all", "rest") else 30
            resources:
                gpu=1,
            params:
                command=lambda wc, input, output: python_command(
                    finetune_run_arguments(dataset_of(output[0]), group_of(output[0]), wc.seed, input[0])),
            shell:
                JOB


rule finetune:
    input:
        "notebooks/finetune.md",
        SELECTED,
        lambda wc: [r for seed in SETTINGS["finetune"]["seeds"] for r in run_records(wc.dataset, seed)],
    output:
        f"{BUILD}/executed/finetune-{{dataset}}.ipynb",
    log:
        f"{BUILD}/logs/finetune-{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(DATASETS),
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0], finetune_parameters(wc.dataset),
                                                           title=finetune_title(wc.dataset),
                                                           rerun=rerun_folders(finetune_parameters(wc.dataset))),
    shell:
        JOB


rule results:
    input:
        "notebooks/results.md",
        [f"{BUILD}/executed/finetune-{d}.ipynb" for d in DATASETS],
        [r for d in DATASETS for seed in SETTINGS["finetune"]["seeds"] for r in run_records(d, seed)],
    output:
        f"{BUILD}/executed/results.ipynb",
    log:
        f"{BUILD}/logs/results.log",
    params:
        command=lambda wc, input, output: notebook_command(input[0], output[0], {"profile": PROFILE, "datasets": DATASETS,
                                                                                 "runs_dir": RUNS_DIR, **SETTINGS["results"],
                                                                                 "frozen_runs_dir": FROZEN_RUNS_DIR if FROZEN_COMPARISON else ""}),
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
        # Results publishes this table's CD diagram (cd-diagram-<profile>): shown here, not drawn twice.
        command=lambda wc, input, output: notebook_command(input[0], output[0], {"results": f"{BUILD}/results/{PROFILE}/table1.csv",
                                                            "n_splits": len(SETTINGS["finetune"]["seeds"]),
                                                            "shown_cd_figure": f"cd-diagram-{PROFILE}"},
                                                           title="Statistics of this build's results"),
    shell:
        JOB


# Every page's published numbers -> build/results/<profile>/published.json, compared with
# reference/published-<profile>.json and the paper's claims (nona.pipeline.reproduce).
rule reproduction:
    input:
        "notebooks/reproduction.md",
        REPORTED,
        [f] if os.path.exists(f := f"reference/published-{PROFILE}.json") else [],
    output:
        REPRODUCTION,
    log:
        f"{BUILD}/logs/reproduction.log",
    params:
        command=lambda wc, input, output: notebook_command(
            input[0], output[0], {"profile": PROFILE, "pages": [os.path.basename(p)[: -len(".ipynb")] for p in REPORTED]}),
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
