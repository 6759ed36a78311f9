"""CITATION.cff is valid against the Citation File Format schema."""

from pathlib import Path

from cffconvert.cli.create_citation import create_citation

ROOT = Path(__file__).resolve().parent.parent


def test_citation_cff_is_valid():
    citation = create_citation(str(ROOT / "CITATION.cff"), None)
    citation.validate()  # raises on a schema violation
    assert "Nearness of Neighbors Attention" in citation.cffstr
