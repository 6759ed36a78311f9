"""The NONA block diagram draws every element of the paper's Figure 2, with no overlapping or crossed labels."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path
from matplotlib.text import Text

from nona.paper.diagram import CONTENT, draw_nona_block

EXPECTED_LABELS = {
    "$X$",
    "$X_N$",
    "$F$",
    "$Z$",
    "$Z_N$",
    r"$\mathrm{Sim}(Z, Z_N)$",
    r"$\sim$",
    r"$a,\ b,\ t$",
    r"$\ln$",
    "$+$",
    "$M$",
    "SoftMax",
    r"$\times$",
    "$y_N$",
    r"$\hat{y}$",
}


@pytest.fixture(scope="module")
def drawn():
    fig = draw_nona_block()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
    boxes = {t.get_gid() or t.get_text(): t.get_window_extent(renderer) for t in texts}
    return fig, texts, boxes


def test_every_element_of_the_papers_figure_is_labelled(drawn):
    fig, texts, _ = drawn
    shown = {t.get_text() for t in texts}
    assert EXPECTED_LABELS <= shown, f"missing labels: {EXPECTED_LABELS - shown}"
    assert any("S(" in s and "a, b, t" in s for s in shown), "the SoftStep mask S(.; a, b, t) is missing"
    assert (
        any("min-max" in s for s in shown) and any("Linear" in s for s in shown) and any("global" in s for s in shown)
    )
    assert any("-\\infty" in s for s in shown) and any("residual" in s for s in shown)


def test_no_two_labels_overlap(drawn):
    _, texts, boxes = drawn
    assert len(boxes) == len(texts) >= 20  # every label has its own name
    clashes = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2) if box_a.overlaps(box_b)]
    assert not clashes, f"overlapping labels: {clashes}"


def test_no_arrow_crosses_a_label(drawn):
    fig, _, boxes = drawn
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) >= 15
    crossings = []
    for arrow in arrows:
        # The arrow's shaft and head as open polylines in display coordinates.
        display = arrow.get_path().transformed(arrow.get_transform())
        lines = [Path(polyline) for polyline in display.to_polygons(closed_only=False)]
        assert lines
        for name, box in boxes.items():
            if any(line.intersects_bbox(box, filled=False) for line in lines):
                crossings.append((arrow.get_gid(), name))
    assert not crossings, f"arrows crossing labels: {crossings}"


def test_labels_sit_inside_their_boxes_and_the_figure(drawn):
    fig, _, boxes = drawn
    figure_box = fig.bbox
    for name, box in boxes.items():
        assert (
            figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1
        ), name
    renderer = fig.canvas.get_renderer()  # the Agg canvas of the fixture
    for patch in fig.axes[0].patches:
        node = patch.get_gid()
        if node not in CONTENT:  # arrows and the frame
            continue
        outline = patch.get_window_extent(renderer)
        inside = ["label"] + (["note"] if CONTENT[node][3] == "inside" else [])
        for part in inside:
            box = boxes[f"{node}-{part}"]
            assert outline.x0 < box.x0 and box.x1 < outline.x1 and outline.y0 < box.y0 and box.y1 < outline.y1, (
                node,
                part,
            )
