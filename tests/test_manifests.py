"""Every dataset manifest follows data_manifests/schema.json and says what the paper says."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from nona.data import MANIFEST_DIR, get_manifest, list_datasets, validate_manifest
from nona.data.manifests import SCHEMA_PATH, file_path, sha256_file

PAPER = [
    "rsna-bone-age",
    "medsegbench-brifiseg",
    "adresso",
    "coughvid",
    "nosemic",
    "udacity",
    "pitchfork",
    "houses",
    "books",
    "austin",
]
EMBEDDED = ["digits-rotation", "vader-valence", "heart-rate-audio", "synthetic-2d"]

# Table 1 of the paper: dense, dense + k-NN, NONA, NONA + k-NN (MSE x 10^3, mean and std).
TABLE_1 = {
    "rsna-bone-age": [(5.12, 0.608), (5.56, 0.458), (4.13, 0.235), (4.03, 0.183)],
    "medsegbench-brifiseg": [(6.69, 1.29), (7.37, 1.15), (4.02, 0.608), (2.38, 0.356)],
    "adresso": [(96.2, 33.3), (41.3, 7.36), (28.0, 4.13), (24.8, 2.17)],
    "coughvid": [(39.7, 27.0), (23.2, 0.370), (21.2, 0.195), (23.2, 0.551)],
    "nosemic": [(7.96, 0.947), (7.23, 0.607), (6.01, 0.472), (5.89, 0.672)],
    "udacity": [(0.435, 0.170), (0.732, 0.250), (0.358, 0.104), (0.239, 0.060)],
    "pitchfork": [(69.6, 167.0), (14.8, 2.20), (10.2, 1.01), (10.5, 1.65)],
    "houses": [(303, 81.3), (20.0, 1.90), (13.2, 1.77), (14.7, 1.38)],
    "books": [(8.33, 0.680), (7.96, 0.58), (7.48, 0.588), (7.48, 0.55)],
    "austin": [(2.29, 0.216), (2.26, 0.177), (2.05, 0.231), (2.06, 0.217)],
}


def test_schema_is_valid_draft07():
    jsonschema.Draft7Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_the_fourteen_datasets_have_manifests():
    assert sorted(list_datasets()) == sorted(PAPER + EMBEDDED)
    assert sorted(list_datasets(embedded=True)) == sorted(EMBEDDED)
    assert sorted(list_datasets(embedded=False)) == sorted(PAPER)


@pytest.mark.parametrize("name", PAPER + EMBEDDED)
def test_manifest_follows_schema(name):
    raw = yaml.safe_load((MANIFEST_DIR / f"{name}.yaml").read_text())
    jsonschema.validate(raw, json.loads(SCHEMA_PATH.read_text()), cls=jsonschema.Draft7Validator)
    m = get_manifest(name)
    assert m["name"] == name
    lo, hi = m["label"]["range"]
    assert lo < hi
    assert m["split"] == {"test_fraction": 0.2, "val_fraction": 0.15, "label_bins": 10}


@pytest.mark.parametrize("name", PAPER)
def test_paper_manifest_records_table_1_and_how_to_get_the_data(name):
    m = get_manifest(name)
    assert m["embedded"] is False
    got = [
        v
        for h in ("dense", "dense_knn", "nona", "nona_knn")
        for v in (m["paper_results"][h]["mean"], m["paper_results"][h]["std"])
    ]
    assert got == pytest.approx([v for pair in TABLE_1[name] for v in pair])
    assert m["files"], "a downloaded dataset must list the files its loader reads"
    assert all(f.get("root", "data") == "data" for f in m["files"])
    assert all(f["path"].startswith(name + "/") or f["path"] == name for f in m["files"])
    assert "data root" in m["instructions"]
    assert m["feature_extractor"]["backbone"]


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_manifest_has_no_paper_results_and_installed_files_match(name):
    m = get_manifest(name)
    assert m["embedded"] is True and m["paper_results"] is None
    for entry in m["files"]:
        assert entry["root"] == "package" and entry["sha256"]
        assert sha256_file(file_path(entry)) == entry["sha256"]


@pytest.mark.parametrize("name", ["heart-rate-audio", "synthetic-2d"])
def test_synthetic_datasets_say_so(name):
    m = get_manifest(name)
    assert m["synthetic"] is True
    assert "SYNTHETIC" in m["description"]


def test_backbone_names_in_manifests_are_registered():
    from nona.backbones import BACKBONES

    for name in list_datasets():
        fe = get_manifest(name)["feature_extractor"]
        for key in ("backbone", "quick_profile_backbone"):
            assert fe.get(key) is None or fe[key] in BACKBONES, (name, key)


def test_invalid_manifest_is_rejected_with_the_field_named():
    m = copy.deepcopy(get_manifest("houses"))
    m["modality"] = "video"
    del m["source"]["license"]
    with pytest.raises(ValueError, match="modality") as info:
        validate_manifest(m, "houses.yaml")
    assert "license" in str(info.value)
    m = copy.deepcopy(get_manifest("houses"))
    m["label"]["range"] = [5, 1]
    with pytest.raises(ValueError, match="lo < hi"):
        validate_manifest(m)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known datasets: adresso"):
        get_manifest("imagenet")


def test_malformed_manifest_is_named_with_its_line(tmp_path, monkeypatch, capsys):
    import nona.data.manifests as manifests
    from nona.pipeline.cli import main

    for name in ("houses", "books"):
        (tmp_path / f"{name}.yaml").write_text((MANIFEST_DIR / f"{name}.yaml").read_text())
    (tmp_path / "schema.json").write_text(SCHEMA_PATH.read_text())
    (tmp_path / "broken.yaml").write_text("name: broken\ntitle: [unclosed\nmodality: text\n")
    monkeypatch.setattr(manifests, "MANIFEST_DIR", tmp_path)
    manifests._read_manifest.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"data_manifests/broken.yaml, line \d+, column \d+: not valid YAML"):
            manifests.get_manifest("broken")
        assert main(["data", "list"]) == 1
        captured = capsys.readouterr()
        assert "houses" in captured.out and "books" in captured.out  # the good ones still list
        assert "broken" not in captured.out
        assert "error: data_manifests/broken.yaml, line" in captured.err and "Traceback" not in captured.err
    finally:
        manifests._read_manifest.cache_clear()
