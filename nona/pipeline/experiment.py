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
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nona.io.atomic import atomic_path, write_json
from nona.io.provenance import now, run_provenance
from nona.pipeline.records import RunRecord, record_path
from nona.train import RawInputs, RegressionModel, TrainConfig, embed_all, fit, mse, predict, resolve_device, tuned_knn

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
METHOD_NAMES = {"dense": "Dense", "nona": "NONA", "nca": "NCA + SoftStep", "dknn": "Diff. k-NN + SoftStep",
                "dense-knnw": "Dense, k-NN-weighted loss"}


def method_name(arm: str, knn: bool = False) -> str:
    """The name of an arm's row, e.g. ``Dense``, ``NONA + k-NN`` (the paper's) or ``NCA + SoftStep``."""
    return METHOD_NAMES[arm] + (" + k-NN" if knn else "")


def arm_config(arm: str, base: TrainConfig, head_configs: dict[str, dict[str, Any]] | None = None, seed: int = 0) -> TrainConfig:
    """The training configuration of ``arm``: ``base``, the selected settings of its head, then the arm's own."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid values are: {', '.join(ARMS)}")
    selected = (head_configs or {}).get(INHERITS.get(arm, arm), {})
    if arm in INHERITS:
        selected = {k: v for k, v in selected.items() if k in ("batch_size", "embed_dim")}
    overrides = {k: v for k, v in selected.items() if k != "head"}
    return replace(base, **{**overrides, **ARMS[arm], "seed": seed})


def load_features(dataset: str, backbone_trainable: bool, device: str = "cpu"):
    """Inputs for training: cached frozen features, or raw inputs with a trainable backbone; plus labels."""
    from nona.backbones import cached_features, get_backbone
    from nona.backbones.cache import default_options
    from nona.data import get_manifest, load_dataset

    ds = load_dataset(dataset)
    backbone_name = get_manifest(dataset)["feature_extractor"].get("quick_profile_backbone" if not backbone_trainable else "backbone")
    if backbone_name is None:
        return torch.as_tensor(np.asarray(ds.inputs, dtype=np.float32)), ds.labels, None
    if not backbone_trainable:
        return torch.from_numpy(cached_features(ds, backbone_name, progress=False)), ds.labels, None
    backbone = get_backbone(backbone_name, **default_options(dataset, backbone_name)).trainable(True)
    return RawInputs(backbone, ds.inputs, ds.sample_rate, resolve_device(device)), ds.labels, backbone


def _standardise(x_train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    # Centre on the training mean and divide by one global scale (train
    # statistics only). Per-dimension scaling would blow up features that are
    # nearly constant on the training split but not on the test split.
    mean = x_train.mean(dim=0)
    scale = x_train.var(dim=0).mean().sqrt().clamp_min(1e-12)
    return [(x - mean) / scale for x in (x_train, *others)]


def train_and_evaluate(
    inputs: torch.Tensor | RawInputs,
    labels: np.ndarray,
    config: TrainConfig,
    backbone: torch.nn.Module | None = None,
    two_stage: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train one head on one seeded split; returns the metrics record and the embeddings to save.

    ``two_stage=False`` skips the regressors fitted on the final embeddings
    (k-NN, NNK, interpolation), which an ablation run does not need.
    """
    from nona.data import LabelScaler, make_splits

    splits = make_splits(labels, seed=config.seed)
    scaler = LabelScaler.fit(labels[splits.train])
    y = torch.as_tensor(scaler.transform(labels), dtype=torch.float32)
    if isinstance(inputs, torch.Tensor):
        x_train, x_val, x_test = _standardise(inputs[splits.train], inputs[splits.val], inputs[splits.test])
        in_dim = inputs.shape[1]
    else:
        x_train, x_val, x_test = (inputs.subset(idx) for idx in (splits.train, splits.val, splits.test))
        in_dim = backbone.out_dim
    y_train, y_val, y_test = y[splits.train], y[splits.val], y[splits.test]
    model = RegressionModel(in_dim, config, backbone=backbone)
    weights = None
    if config.loss_weights == "knn":
        from nona.baselines import knn_loss_weights

        weights = torch.as_tensor(knn_loss_weights(_frozen_features(x_train), y_train.numpy()))
    result = fit(model, (x_train, y_train, x_val, y_val), config, sample_weight=weights)
    device = resolve_device(config.device)
    predictions = {"test": predict(model, x_test, x_train, y_train.to(device)).cpu()}
    test_mse = mse(predictions["test"], y_test)
    record = {
        "method": method_name(config.head),
        "test_mse": test_mse,
        "val_mse": result.best_val_mse,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "train_seconds": result.seconds,
        "history": result.history,
        "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "label_scaling": scaler.to_dict(),
    }
    if not two_stage:
        return record, {}
    # The interpolation with k-NN is tuned on the head's validation predictions.
    predictions["val"] = predict(model, x_val, x_train, y_train.to(device)).cpu()
    started = time.perf_counter()
    z = {part: embed_all(model, x).cpu().numpy() for part, x in (("train", x_train), ("val", x_val), ("test", x_test))}
    knn, knn_params = tuned_knn(z["train"], y_train.numpy(), z["val"], y_val.numpy())
    knn_test_mse = float(np.mean((knn.predict(z["test"]) - y_test.numpy()) ** 2))
    knn_seconds = time.perf_counter() - started
    extensions = {}
    if config.loss_weights == "none" and config.head in ("dense", "nona"):
        extensions = _two_stage_extensions(config.head, z, (y_train, y_val, y_test), predictions, knn)
    record.update({
        "knn_method": method_name(config.head, knn=True),
        "knn_test_mse": knn_test_mse,
        "knn_params": knn_params,
        "knn_seconds": knn_seconds,
        "extensions": extensions,
    })
    arrays = {f"z_{part}": value for part, value in z.items()}
    arrays.update({f"pred_{part}": value.numpy() for part, value in predictions.items()})
    arrays.update({"y_train": y_train.numpy(), "y_val": y_val.numpy(), "y_test": y_test.numpy()})
    return record, arrays


def _frozen_features(x: torch.Tensor | RawInputs) -> np.ndarray:
    # The k-NN of the loss weights looks at the inputs before fine-tuning: the
    # frozen features, or the pretrained backbone's output on raw inputs.
    if isinstance(x, torch.Tensor):
        return x.numpy()
    with torch.no_grad():
        x.backbone.eval()
        return torch.cat([x.backbone(x.take(np.arange(i, min(i + 256, len(x))))).cpu() for i in range(0, len(x), 256)]).numpy()


def _two_stage_extensions(head: str, z: dict, labels: tuple, predictions: dict, knn) -> dict[str, dict[str, Any]]:
    """NNK on the head's embeddings and, for the dense head, its interpolation with the tuned k-NN (both tuned on validation)."""
    from nona.baselines import interpolate, tuned_interpolation, tuned_nnk

    y_train, y_val, y_test = (y.numpy() for y in labels)
    started = time.perf_counter()
    nnk, nnk_params = tuned_nnk(z["train"], y_train, z["val"], y_val)
    out = {f"{METHOD_NAMES[head]} + NNK": {"test_mse": float(np.mean((nnk.predict(z["test"]) - y_test) ** 2)),
                                           "params": nnk_params, "seconds": time.perf_counter() - started}}
    if head == "dense":
        started = time.perf_counter()
        lam = tuned_interpolation(predictions["val"].numpy(), knn.predict(z["val"]), y_val)
        blended = interpolate(predictions["test"].numpy(), knn.predict(z["test"]), lam)
        out["Dense ⊕ k-NN"] = {"test_mse": float(np.mean((blended - y_test) ** 2)), "params": {"lambda": lam},
                               "seconds": time.perf_counter() - started}
    return out


def train_dataset(
    dataset: str,
    profile: str,
    seeds: list[int],
    arms: list[str],
    base: TrainConfig,
    out_dir: str | Path,
    backbone_trainable: bool = False,
    log=print,
    head_configs: dict[str, dict[str, Any]] | None = None,
) -> list[RunRecord]:
    """Train every missing (arm, seed) run of ``dataset`` and return the records of all of them.

    ``head_configs`` overrides settings of ``base`` per head (e.g. the
    configuration an ablation selected). A record made with other settings
    than those requested is trained again.
    """
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; valid values are: {', '.join(ARMS)}")
    out_dir = Path(out_dir)
    loaded = None
    for arm in arms:
        for seed in seeds:
            path = record_path(out_dir, arm, seed)
            config = arm_config(arm, base, head_configs, seed)
            wanted = {**config.to_dict(), "backbone_trainable": backbone_trainable}
            if path.exists():
                if json.loads(path.read_text())["config"] == wanted:
                    log(f"{dataset}: {arm} seed {seed} is complete; skipped")
                    continue
                log(f"{dataset}: {arm} seed {seed} has a record made with other settings; training again")
            if loaded is None:
                log(f"{dataset}: loading inputs (backbone_trainable={backbone_trainable})")
                loaded = load_features(dataset, backbone_trainable, base.device)
            inputs, labels, pretrained = loaded
            backbone = None
            if pretrained is not None:
                # Each run fine-tunes its own copy of the pretrained backbone.
                backbone = copy.deepcopy(pretrained)
                inputs = RawInputs(backbone, inputs.inputs, inputs.sample_rate, inputs.device)
            started = now()
            log(f"{dataset}: training {arm} seed {seed}")
            record, arrays = train_and_evaluate(inputs, labels, config, backbone)
            record.update({
                "dataset": dataset, "profile": profile, "head": arm, "seed": seed,
                "method": method_name(arm), "knn_method": method_name(arm, knn=True),
                "config": wanted,
                "provenance": run_provenance(str(resolve_device(config.device)), started),
            })
            with atomic_path(path.with_suffix(".npz")) as tmp:
                np.savez_compressed(tmp, **arrays)
            write_json(path, record)
            log(f"{dataset}: {arm} seed {seed}: test MSE {record['test_mse']:.5f}, k-NN {record['knn_test_mse']:.5f}, "
                f"{record['epochs']} epochs")
    return [RunRecord.load(record_path(out_dir, arm, seed)) for arm in arms for seed in seeds]


def selected_head_configs(selection: str | Path | None) -> dict[str, dict[str, Any]]:
    """The per-head configuration an ablation selected (``selected.json``), or none."""
    if not selection:
        return {}
    path = Path(selection)
    if not path.is_file():
        raise FileNotFoundError(f"ablation selection {path} does not exist; run the ablation first (snakemake ... ablation)")
    return json.loads(path.read_text())["heads"]


def base_config(settings: dict[str, Any]) -> TrainConfig:
    """The base training configuration from a profile's ``finetune`` settings (unknown keys are refused)."""
    fields = set(TrainConfig.__dataclass_fields__)
    extra = set(settings) - fields - {"seeds", "backbone_trainable"}
    if extra:
        raise ValueError(f"unknown fine-tuning settings {sorted(extra)}; valid are: {', '.join(sorted(fields))}")
    return TrainConfig(**{k: v for k, v in settings.items() if k in fields})


def main(argv: list[str] | None = None) -> int:
    """Command line of one pipeline job: every arm of one (dataset, seed), records written atomically."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nona.pipeline.experiment", description=main.__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out-dir", required=True, help="the dataset's runs folder, e.g. build/runs/quick/digits-rotation")
    parser.add_argument("--ablation", default="", help="selected.json of the ablation (the heads' configuration)")
    parser.add_argument("--settings-json", default="{}", help="the profile's fine-tuning settings (TrainConfig fields)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    args = parser.parse_args(argv)
    settings = json.loads(args.settings_json)
    train_dataset(args.dataset, args.profile, [args.seed], args.arms, base_config(settings), args.out_dir,
                  backbone_trainable=bool(settings.get("backbone_trainable", False)),
                  head_configs=selected_head_configs(args.ablation))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
