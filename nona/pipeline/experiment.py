"""The paper's experiment (Section 5) for one dataset: every head over several seeds, with two-stage baselines.

An *arm* is one head with its settings; a *run* is one arm trained on one
seeded split. For each run it writes ``<out_dir>/<arm>/seed<k>.json`` (metrics,
config, split sizes, provenance; read back by :mod:`nona.pipeline.records`) and
``seed<k>.npz`` (final embeddings and labels). The JSON is written last and
atomically, so its presence means the run is complete; a re-run skips complete
runs made with the same settings.

The arms ``dense`` and ``nona`` give the paper's four regressors (each head,
and a tuned k-NN on its embeddings). The *extensions* go beyond the paper:
the follow-up paper's heads (``nca``, ``dknn``), the dense head trained with
k-NN-guided loss weights (``dense-knnw``), and, on the paper heads'
embeddings, NNK regression and the test-time interpolation of the dense head
with its k-NN.

How much of the pretrained backbone trains is ``trainable_layers`` (a field of
:class:`~nona.train.TrainConfig`, so it is in every record's ``config``):
0 trains the projector and head on cached frozen features; k trains the last
k blocks of the backbone too, on cached activations below them
(``nona.backbones.cached_activations``), with the backbone's own learning
rate ``backbone_lr``; ``"all"`` fine-tunes end to end from raw inputs. A job
can also train the paper's two heads on frozen features into a second folder
(``frozen_dir``), the labelled comparison of what fine-tuning adds.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nona.devices import move_to
from nona.io.atomic import atomic_path, write_json
from nona.io.provenance import now, run_provenance
from nona.pipeline.records import RunRecord, record_path
from nona.train import (
    RawInputs,
    RegressionModel,
    TrainConfig,
    check_trainable_layers,
    embed_all,
    fit,
    input_length,
    mse,
    predict,
    resolve_device,
    take_rows,
    tuned_knn,
)

# Arms of the experiment: the settings that define each, and whose selected
# configuration (batch size, embedding dimension) it inherits.
ARMS: dict[str, dict[str, Any]] = {
    "dense": {"head": "dense"},
    "nona": {"head": "nona"},
    "nca": {"head": "nca", "similarity": "rbf", "softstep": "lu-pointwise"},
    "dknn": {"head": "dknn", "softstep": "lu-pointwise"},
    "dense-knnw": {"head": "dense", "loss_weights": "knn"},
}
INHERITS = {"nca": "nona", "dknn": "nona", "dense-knnw": "dense"}
# The arms trained again on frozen features for the comparison with fine-tuning.
FROZEN_COMPARISON_ARMS = ("dense", "nona")
METHOD_NAMES = {
    "dense": "Dense",
    "nona": "NONA",
    "nca": "NCA + SoftStep",
    "dknn": "Diff. k-NN + SoftStep",
    "dense-knnw": "Dense, k-NN-weighted loss",
}


def method_name(arm: str, knn: bool = False) -> str:
    """The name of an arm's row, e.g. ``Dense``, ``NONA + k-NN`` (the paper's) or ``NCA + SoftStep``."""
    return METHOD_NAMES[arm] + (" + k-NN" if knn else "")


def arm_config(
    arm: str, base: TrainConfig, head_configs: dict[str, dict[str, Any]] | None = None, seed: int = 0
) -> TrainConfig:
    """The training configuration of ``arm``: ``base``, the selected settings of its head, then the arm's own."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid values are: {', '.join(ARMS)}")
    selected = (head_configs or {}).get(INHERITS.get(arm, arm), {})
    if arm in INHERITS:
        selected = {k: v for k, v in selected.items() if k in ("batch_size", "embed_dim")}
    overrides = {k: v for k, v in selected.items() if k != "head"}
    return replace(base, **{**overrides, **ARMS[arm], "seed": seed})


def _backbone_name(dataset: str, trainable_layers: int | str) -> str | None:
    fe = get_manifest_fe(dataset)
    # Frozen features may come from the manifest's lighter quick-profile backbone; training one uses the main one.
    return fe.get("quick_profile_backbone", fe.get("backbone")) if trainable_layers == 0 else fe.get("backbone")


def get_manifest_fe(dataset: str) -> dict[str, Any]:
    """The ``feature_extractor`` section of a dataset's manifest."""
    from nona.data import get_manifest

    return get_manifest(dataset)["feature_extractor"]


# How the book names each backbone of the quick and paper profiles, and whether its weights are pretrained.
BACKBONE_NAMES = {
    "efficientnet_lite0": ("EfficientNet-Lite0", True),
    "minilm": ("MiniLM", True),
    "audio_cnn": ("a 1-D audio CNN", False),
}


def finetuning_statement(records: list[RunRecord]) -> str:
    """One sentence per dataset saying what of its backbone the paper's heads trained, read from the run records."""
    from nona.data import get_manifest

    sentences = []
    for dataset in dict.fromkeys(r.dataset for r in records):
        layers = {str(r.config.get("trainable_layers", 0)) for r in records if r.dataset == dataset and r.is_paper_arm}
        name = _backbone_name(dataset, 0 if layers == {"0"} else 1)
        title = get_manifest(dataset)["title"]
        if name is None:
            sentences.append(f"{title}: no backbone (the inputs are features already).")
            continue
        label, pretrained = BACKBONE_NAMES.get(name, (name, True))
        weights = "pretrained" if pretrained else "randomly initialised, never pretrained"
        if layers == {"0"}:
            sentences.append(f"{title}: {label} ({weights}) stays frozen; the heads train on its cached features.")
        else:
            which = ", ".join(sorted(layers))
            trained = {
                "all": f"all of {label} ({weights}) trains",
                "1": f"the last block of {label} ({weights}) trains",
            }.get(which, f"the last {which} blocks of {label} ({weights}) train")
            cached = "" if which == "all" else f", on activations cached below {'it' if which == '1' else 'them'}"
            warm = [r for r in records if r.dataset == dataset and r.is_paper_arm and "warm_start" in r.data]
            start = (
                f", starting from the frozen runs' projector and head for at most {warm[0].config['max_epochs']} "
                "epochs (linear probing, then fine-tuning; not the paper's schedule)"
                if warm
                else ""
            )
            sentences.append(f"{title}: {trained} with the projector and head{cached}{start}.")
    return " ".join(sentences)


def effective_trainable_layers(dataset: str, trainable_layers: int | str | bool) -> int | str:
    """``trainable_layers`` as a run of ``dataset`` can use it: 0 where the dataset has no backbone (tabular inputs)."""
    if isinstance(trainable_layers, bool):  # the older setting backbone_trainable
        trainable_layers = "all" if trainable_layers else 0
    trainable_layers = check_trainable_layers(trainable_layers)
    return trainable_layers if _backbone_name(dataset, trainable_layers) is not None else 0


def load_features(
    dataset: str, trainable_layers: int | str | bool = 0, device: str = "cpu", *, backbone_trainable: bool | None = None
):
    """Inputs of every example for ``trainable_layers``, the labels, and the pretrained module to fine-tune (or None).

    0: cached frozen features (a tensor). k: cached activations below the
    last k blocks (a tensor or a mapping of tensors) and the backbone's top
    module. ``"all"``: :class:`~nona.train.RawInputs` and the whole backbone.
    ``device`` is unused (every batch moves with :func:`nona.devices.move_to`);
    it stays for callers that pass it.
    """
    from nona.backbones import cached_activations, cached_features, get_backbone
    from nona.backbones.cache import default_options
    from nona.data import load_dataset

    del device
    if backbone_trainable is not None:
        trainable_layers = bool(backbone_trainable)
    trainable_layers = effective_trainable_layers(dataset, trainable_layers)
    ds = load_dataset(dataset)
    backbone_name = _backbone_name(dataset, trainable_layers)
    if backbone_name is None:
        return torch.as_tensor(np.asarray(ds.inputs, dtype=np.float32)), ds.labels, None
    if trainable_layers == 0:
        return torch.from_numpy(cached_features(ds, backbone_name, progress=False)), ds.labels, None
    backbone = get_backbone(backbone_name, **default_options(dataset, backbone_name))
    if trainable_layers == "all":
        return RawInputs(backbone.trainable(True), ds.inputs, ds.sample_rate), ds.labels, backbone
    activations = cached_activations(ds, backbone, trainable_layers, progress=False)
    return activations, ds.labels, backbone.top(trainable_layers).requires_grad_(True)


def standardisation(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training mean of each feature and one global scale: frozen features are ``(x - mean) / scale``.

    Training statistics only. Per-dimension scaling would blow up features
    that are nearly constant on the training split but not on the test split.
    """
    return x_train.mean(dim=0), x_train.var(dim=0).mean().sqrt().clamp_min(1e-12)


class Standardised(torch.nn.Module):
    """A trainable backbone top whose output is standardised as a frozen run's features were (fixed statistics).

    A warm start (:class:`WarmStart`) puts it in front of the frozen run's
    projector, so that the fine-tuned model starts as the frozen one: the
    top's output at its pretrained weights is the frozen features.
    """

    def __init__(self, top: torch.nn.Module, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.top = top
        self.out_dim = top.out_dim
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, x) -> torch.Tensor:
        return (self.top(x) - self.mean) / self.scale


@dataclass
class WarmStart:
    """A frozen-backbone run's projector and head, and the standardisation of the features it trained on.

    Fine-tuning from it is linear probing then fine-tuning (LP-FT): measured by
    ``benchmarks/finetune_cost.py --warm-start``; the pipeline's runs start from
    the pretrained backbone and a new projector and head, as in the paper.
    """

    state: dict[str, torch.Tensor]
    mean: torch.Tensor
    scale: torch.Tensor


def train_and_evaluate(
    inputs: torch.Tensor | dict[str, torch.Tensor] | RawInputs,
    labels: np.ndarray,
    config: TrainConfig,
    backbone: torch.nn.Module | None = None,
    two_stage: bool = True,
    warm_start: WarmStart | None = None,
    kept: dict[str, WarmStart] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train one head on one seeded split; returns the metrics record and the embeddings to save.

    ``inputs`` are frozen features (``backbone`` None; standardised on the
    training split), cached activations that ``backbone`` (a trainable top)
    takes, or :class:`~nona.train.RawInputs` of ``backbone``.
    ``two_stage=False`` skips the regressors fitted on the final embeddings
    (k-NN, NNK, interpolation), which an ablation run does not need.
    ``warm_start`` (with a backbone): start the projector and head from a
    frozen run of the same split (see :class:`WarmStart`). ``kept`` (a frozen
    run): receives ``kept["warm_start"]``, this run's fitted projector and head.
    """
    from nona.data import LabelScaler, make_splits

    splits = make_splits(labels, seed=config.seed)
    scaler = LabelScaler.fit(labels[splits.train])
    y = torch.as_tensor(scaler.transform(labels), dtype=torch.float32)
    if input_length(inputs) != len(labels):
        raise ValueError(f"{input_length(inputs)} inputs but {len(labels)} labels; they must be aligned one to one")
    if backbone is None:
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2:
            raise ValueError(
                "without a backbone the inputs must be a feature tensor (n, D); pass the backbone (top) that takes them"
            )
        rows = [inputs[idx] for idx in (splits.train, splits.val, splits.test)]
        mean, scale = standardisation(rows[0])
        x_train, x_val, x_test = ((x - mean) / scale for x in rows)
        in_dim = inputs.shape[1]
    else:
        x_train, x_val, x_test = (_rows(inputs, idx) for idx in (splits.train, splits.val, splits.test))
        in_dim = backbone.out_dim
    if warm_start is not None and backbone is None:
        raise ValueError("a warm start fine-tunes a backbone from a frozen run; pass the backbone (top) to fine-tune")
    if kept is not None and backbone is not None:
        raise ValueError("only a frozen-backbone run can be kept as a warm start")
    if warm_start is not None:
        backbone = Standardised(backbone, warm_start.mean, warm_start.scale)
    y_train, y_val, y_test = y[splits.train], y[splits.val], y[splits.test]
    model = RegressionModel(in_dim, config, backbone=backbone)
    if warm_start is not None:
        advice = "start from a frozen run of the same head and settings"
        try:
            missing, unexpected = model.load_state_dict(warm_start.state, strict=False)
        except RuntimeError as error:  # a tensor of another shape
            raise ValueError(f"the warm start does not fit this model: {error}; {advice}") from error
        if unexpected or any(not key.startswith("backbone.") for key in missing):
            raise ValueError(
                f"the warm start does not fit this model (missing {missing}, unexpected {unexpected}); {advice}"
            )
    weights = None
    if config.loss_weights == "knn":
        from nona.baselines import knn_loss_weights

        weights = torch.as_tensor(knn_loss_weights(_frozen_features(x_train, backbone), y_train.numpy()))
    result = fit(model, (x_train, y_train, x_val, y_val), config, sample_weight=weights)
    if kept is not None:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        kept["warm_start"] = WarmStart(state, mean, scale)
    # predict moves every batch (and the labels) to the model's device itself.
    predictions = {"test": predict(model, x_test, x_train, y_train).cpu()}
    test_mse = mse(predictions["test"], y_test)
    record = {
        "method": method_name(config.head),
        "test_mse": test_mse,
        "val_mse": result.best_val_mse,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "train_seconds": result.seconds,
        "backbone_trainable_parameters": 0
        if backbone is None
        else sum(p.numel() for p in backbone.parameters() if p.requires_grad),
        "steps": result.steps,
        "seconds_per_step": result.step_seconds / max(result.steps, 1),
        "history": result.history,
        "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "label_scaling": scaler.to_dict(),
    }
    if warm_start is not None:
        record["warm_start"] = {"start": "the projector and head of the frozen-backbone run of the same split"}
    if not two_stage:
        return record, {}
    # The interpolation with k-NN is tuned on the head's validation predictions.
    predictions["val"] = predict(model, x_val, x_train, y_train).cpu()
    started = time.perf_counter()
    z = {part: embed_all(model, x).cpu().numpy() for part, x in (("train", x_train), ("val", x_val), ("test", x_test))}
    knn, knn_params = tuned_knn(z["train"], y_train.numpy(), z["val"], y_val.numpy())
    knn_test_mse = float(np.mean((knn.predict(z["test"]) - y_test.numpy()) ** 2))
    knn_seconds = time.perf_counter() - started
    extensions = {}
    if config.loss_weights == "none" and config.head in ("dense", "nona"):
        extensions = _two_stage_extensions(config.head, z, (y_train, y_val, y_test), predictions, knn)
    record.update(
        {
            "knn_method": method_name(config.head, knn=True),
            "knn_test_mse": knn_test_mse,
            "knn_params": knn_params,
            "knn_seconds": knn_seconds,
            "extensions": extensions,
        }
    )
    arrays = {f"z_{part}": value for part, value in z.items()}
    arrays.update({f"pred_{part}": value.numpy() for part, value in predictions.items()})
    arrays.update({"y_train": y_train.numpy(), "y_val": y_val.numpy(), "y_test": y_test.numpy()})
    return record, arrays


def _rows(inputs, indices: np.ndarray):
    return inputs.subset(indices) if isinstance(inputs, RawInputs) else take_rows(inputs, torch.as_tensor(indices))


def _frozen_features(x, backbone: torch.nn.Module | None) -> np.ndarray:
    # The k-NN of the loss weights looks at the inputs before fine-tuning: the
    # frozen features, or the pretrained backbone (top)'s output on its inputs.
    if backbone is None:
        return x.numpy()
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    try:
        with torch.no_grad():
            n = input_length(x)
            parts = [
                backbone(move_to(take_rows(x, torch.arange(i, min(i + 256, n))), device)).cpu()
                for i in range(0, n, 256)
            ]
    finally:
        backbone.train(was_training)
    return torch.cat(parts).numpy()


def _two_stage_extensions(head: str, z: dict, labels: tuple, predictions: dict, knn) -> dict[str, dict[str, Any]]:
    """NNK on the head's embeddings and, for the dense head, its interpolation with the tuned k-NN.

    Both are tuned on the validation split.
    """
    from nona.baselines import interpolate, tuned_interpolation, tuned_nnk

    y_train, y_val, y_test = (y.numpy() for y in labels)
    started = time.perf_counter()
    nnk, nnk_params = tuned_nnk(z["train"], y_train, z["val"], y_val)
    out = {
        f"{METHOD_NAMES[head]} + NNK": {
            "test_mse": float(np.mean((nnk.predict(z["test"]) - y_test) ** 2)),
            "params": nnk_params,
            "seconds": time.perf_counter() - started,
        }
    }
    if head == "dense":
        started = time.perf_counter()
        lam = tuned_interpolation(predictions["val"].numpy(), knn.predict(z["val"]), y_val)
        blended = interpolate(predictions["test"].numpy(), knn.predict(z["test"]), lam)
        out["Dense ⊕ k-NN"] = {
            "test_mse": float(np.mean((blended - y_test) ** 2)),
            "params": {"lambda": lam},
            "seconds": time.perf_counter() - started,
        }
    return out


def check_warm_start(warm_start: Any) -> dict[str, int] | None:
    """``warm_start`` if it is None or ``{"max_epochs": m, "patience": p}`` (positive integers); else a ValueError."""
    if warm_start is None:
        return None
    valid = isinstance(warm_start, dict) and set(warm_start) == {"max_epochs", "patience"}
    if not valid or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in warm_start.values()):
        raise ValueError(
            "warm_start must be {max_epochs: <positive int>, patience: <positive int>} (the fine-tuning stage of "
            f"linear probing then fine-tuning) or absent, got {warm_start!r}"
        )
    return dict(warm_start)


def train_dataset(
    dataset: str,
    profile: str,
    seeds: list[int],
    arms: list[str],
    base: TrainConfig,
    out_dir: str | Path,
    log=print,
    head_configs: dict[str, dict[str, Any]] | None = None,
    frozen_dir: str | Path | None = None,
    trainable_arms: list[str] | None = None,
    frozen_arms: list[str] | None = None,
    warm_start: dict[str, int] | None = None,
) -> list[RunRecord]:
    """Train every missing (arm, seed) run of ``dataset`` and return the records of all of them.

    ``base.trainable_layers`` says how much of the backbone trains (see the
    module's docstring). ``head_configs`` overrides settings of ``base`` per
    head (e.g. the configuration an ablation selected). With ``frozen_dir``,
    the paper's two heads (or those of ``frozen_arms``) are also trained with a
    frozen backbone (``trainable_layers=0``, same seeds and settings) into that
    folder, and their records are not returned. ``trainable_arms`` (default: every arm)
    names the arms that fine-tune ``base.trainable_layers`` blocks; the other
    arms train on frozen features (``trainable_layers=0``, in their records).
    ``warm_start`` (``{"max_epochs": m, "patience": p}``): a fine-tuned Dense or
    NONA run starts from the projector and head of its frozen run in
    ``frozen_dir`` (linear probing, then fine-tuning for at most ``m`` epochs);
    those frozen runs are trained first and keep their projector and head
    (``seed<k>.pt``). Without it, a fine-tuned run starts from a new projector
    and head, as in the paper. A record made with other settings than those
    requested (or from another frozen run) is trained again.
    """
    for arm in [*arms, *(trainable_arms or []), *(frozen_arms or [])]:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; valid values are: {', '.join(ARMS)}")
    warm_start = check_warm_start(warm_start)
    base = replace(base, trainable_layers=effective_trainable_layers(dataset, base.trainable_layers))
    frozen_base = replace(base, trainable_layers=0)
    tuned = set(arms if trainable_arms is None else trainable_arms)
    plan = [(arm, seed, Path(out_dir), base if arm in tuned else frozen_base) for arm in arms for seed in seeds]
    if frozen_dir is not None:
        frozen_plan = [
            (arm, seed, Path(frozen_dir), frozen_base)
            for arm in (FROZEN_COMPARISON_ARMS if frozen_arms is None else frozen_arms)
            for seed in seeds
        ]
        # A warm start needs its frozen run first.
        plan = frozen_plan + plan if warm_start else plan + frozen_plan
    loaded: dict[Any, tuple] = {}
    for arm, seed, folder, arm_base in plan:
        path = record_path(folder, arm, seed)
        config = arm_config(arm, arm_base, head_configs, seed)
        keeps = warm_start is not None and folder != Path(out_dir) and arm in FROZEN_COMPARISON_ARMS
        start, start_sha256 = None, None
        if warm_start is not None and folder == Path(out_dir) and config.trainable_layers != 0:
            if arm in FROZEN_COMPARISON_ARMS:
                config = replace(config, **warm_start)
                start, start_sha256 = _frozen_state(frozen_dir, arm, seed, dataset)
        wanted = config.to_dict()
        if path.exists():
            done = json.loads(path.read_text())
            marker = done.get("warm_start")  # from other versions: absent, or not this form
            same_start = start is None or (
                isinstance(marker, dict) and marker.get("frozen_state_sha256") == start_sha256
            )
            if done["config"] == wanted and same_start and (not keeps or path.with_suffix(".pt").exists()):
                log(f"{dataset}: {arm} seed {seed} (trainable_layers={config.trainable_layers}) is complete; skipped")
                continue
            log(f"{dataset}: {arm} seed {seed} has a record made with other settings; training again")
        if config.trainable_layers not in loaded:
            log(f"{dataset}: loading inputs (trainable_layers={config.trainable_layers})")
            loaded[config.trainable_layers] = load_features(dataset, config.trainable_layers)
        inputs, labels, pretrained = loaded[config.trainable_layers]
        # Each run fine-tunes its own copy of the pretrained weights.
        backbone = None if pretrained is None else copy.deepcopy(pretrained)
        if isinstance(inputs, RawInputs):
            inputs = RawInputs(backbone, inputs.inputs, inputs.sample_rate)
        started = now()
        log(f"{dataset}: training {arm} seed {seed} (trainable_layers={config.trainable_layers})")
        kept: dict[str, WarmStart] | None = {} if keeps else None
        record, arrays = train_and_evaluate(inputs, labels, config, backbone, warm_start=start, kept=kept)
        record.update(
            {
                "dataset": dataset,
                "profile": profile,
                "head": arm,
                "seed": seed,
                "method": method_name(arm),
                "knn_method": method_name(arm, knn=True),
                "trainable_layers": config.trainable_layers,
                "config": wanted,
                "provenance": run_provenance(str(resolve_device(config.device)), started),
            }
        )
        if start is not None:
            record["warm_start"]["frozen_state_sha256"] = start_sha256
        with atomic_path(path.with_suffix(".npz")) as tmp:
            np.savez_compressed(tmp, **arrays)
        if kept:
            with atomic_path(path.with_suffix(".pt")) as tmp:
                torch.save(vars(kept["warm_start"]), tmp)
        write_json(path, record)
        log(
            f"{dataset}: {arm} seed {seed}: test MSE {record['test_mse']:.5f}, k-NN {record['knn_test_mse']:.5f}, "
            f"{record['epochs']} epochs, {1e3 * record['seconds_per_step']:.1f} ms per step"
        )
    return [RunRecord.load(record_path(out_dir, arm, seed)) for arm in arms for seed in seeds]


def _frozen_state(frozen_dir: str | Path | None, arm: str, seed: int, dataset: str) -> tuple[WarmStart, str]:
    """The projector and head a frozen run kept (``seed<k>.pt`` beside its record), and the file's SHA-256."""
    path = None if frozen_dir is None else record_path(Path(frozen_dir), arm, seed).with_suffix(".pt")
    if path is None or not path.exists() or not path.with_suffix(".json").exists():
        raise FileNotFoundError(
            f"{dataset}: the warm start of {arm} seed {seed} needs its frozen run's projector and head "
            f"({path or 'no frozen_dir given'}); train the frozen comparison first (frozen_comparison: true)"
        )
    # Read once: the state loads from the same bytes that are hashed.
    data = path.read_bytes()
    return WarmStart(**torch.load(io.BytesIO(data), weights_only=True)), hashlib.sha256(data).hexdigest()


def selected_head_configs(selection: str | Path | None) -> dict[str, dict[str, Any]]:
    """The per-head configuration an ablation selected (``selected.json``), or none."""
    if not selection:
        return {}
    path = Path(selection)
    if not path.is_file():
        raise FileNotFoundError(
            f"ablation selection {path} does not exist; run the ablation first (snakemake ... ablation)"
        )
    return json.loads(path.read_text())["heads"]


# Fine-tuning settings of a profile that are not TrainConfig fields: what the pipeline does with the runs.
PIPELINE_SETTINGS = {"seeds", "frozen_comparison", "trainable_arms", "warm_start"}


def base_config(settings: dict[str, Any]) -> TrainConfig:
    """The base training configuration from a profile's ``finetune`` settings (unknown keys are refused)."""
    fields = set(TrainConfig.__dataclass_fields__)
    extra = set(settings) - fields - PIPELINE_SETTINGS
    if "backbone_trainable" in extra:
        raise ValueError(
            "the setting backbone_trainable is now trainable_layers: 0 (frozen), k (last k blocks) or 'all'"
        )
    if extra:
        raise ValueError(
            f"unknown fine-tuning settings {sorted(extra)}; valid are: {', '.join(sorted(fields | PIPELINE_SETTINGS))}"
        )
    return TrainConfig(**{k: v for k, v in settings.items() if k in fields})


def main(argv: list[str] | None = None) -> int:
    """Command line of one pipeline job: every arm of one (dataset, seed), records written atomically."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nona.pipeline.experiment", description=main.__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--out-dir", required=True, help="the dataset's runs folder, e.g. build/runs/quick/digits-rotation"
    )
    parser.add_argument("--ablation", default="", help="selected.json of the ablation (the heads' configuration)")
    parser.add_argument("--settings-json", default="{}", help="the profile's fine-tuning settings (TrainConfig fields)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument(
        "--frozen-dir", default="", help="also train the paper's two heads on frozen features into this folder"
    )
    parser.add_argument(
        "--frozen-arms", nargs="*", default=list(FROZEN_COMPARISON_ARMS), help="the arms trained into --frozen-dir"
    )
    args = parser.parse_args(argv)
    settings = json.loads(args.settings_json)
    train_dataset(
        args.dataset,
        args.profile,
        [args.seed],
        args.arms,
        base_config(settings),
        args.out_dir,
        head_configs=selected_head_configs(args.ablation),
        frozen_dir=args.frozen_dir or None,
        trainable_arms=settings.get("trainable_arms"),
        frozen_arms=args.frozen_arms,
        warm_start=settings.get("warm_start"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def frozen_vs_finetuned(
    finetuned_dir: str | Path,
    frozen_dir: str | Path,
    datasets: list[str],
    more: dict[str, str | Path] | None = None,
) -> tuple[Any, Any]:
    """Test MSE of the paper's four regressors with the backbone fine-tuned and frozen, and the time per training step.

    Reads the ``dense`` and ``nona`` records of every dataset under both
    folders (``<dir>/<dataset>/<arm>/seed<k>.json``), and under the folders of
    ``more`` (label -> folder, e.g. another fine-tuning schedule). Returns two tidy tables:
    (dataset, method, backbone, mean, std, n_seeds) of test MSE, and
    (dataset, head, backbone, trainable_layers, ms_per_step, n_runs) of the
    mean seconds per optimiser step.
    """
    import pandas as pd

    from nona.pipeline.records import method_table, summary_table

    scores, steps = [], []
    for label, folder in (("fine-tuned", finetuned_dir), ("frozen", frozen_dir), *(more or {}).items()):
        records = [
            RunRecord.load(p)
            for d in datasets
            for arm in FROZEN_COMPARISON_ARMS
            for p in sorted((Path(folder) / d / arm).glob("seed*.json"))
        ]
        if not records:
            raise FileNotFoundError(f"no records of the {label} runs under {folder}; run the fine-tuning step first")
        table = method_table(records)
        scores.append(summary_table(table[~table.extension]).drop(columns="extension").assign(backbone=label))
        steps += [
            {
                "dataset": r.dataset,
                "head": r.data["method"],
                "backbone": label,
                "trainable_layers": str(r.config.get("trainable_layers", 0)),
                "ms_per_step": 1e3 * r.data["seconds_per_step"],
            }
            for r in records
            if "seconds_per_step" in r.data
        ]
    per_step = pd.DataFrame(steps, columns=["dataset", "head", "backbone", "trainable_layers", "ms_per_step"])
    per_step = (
        per_step.groupby(["dataset", "head", "backbone", "trainable_layers"])["ms_per_step"]
        .agg(ms_per_step="mean", n_runs="count")
        .reset_index()
    )
    return pd.concat(scores, ignore_index=True)[["dataset", "method", "backbone", "mean", "std", "n_seeds"]], per_step
