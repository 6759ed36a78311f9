"""The block diagram of NONA with SoftStep (the paper's Figure 2), drawn with matplotlib.

The drawing is a small graph of nodes (boxes and circles at fixed positions, in
inches) joined by straight or elbowed arrows. Every text artist carries a ``gid``
(``<node>-label``, ``<node>-note`` or ``<arrow>-label``) so tests can check what is
drawn and that no label overlaps another or is crossed by an arrow.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path

# Okabe-Ito colours (safe for the common colour-vision deficiencies), as light
# fills behind dark text with the full-strength colour as the edge.
PALETTE = {
    "data": ("#d6ebf7", "#0072B2"),  # inputs, embeddings, labels, prediction: blue
    "extractor": ("#e6e6e6", "#555555"),  # feature extractor F: grey
    "softstep": ("#fbe7c2", "#E69F00"),  # the SoftStep branch: orange
    "nona": ("#c9ede0", "#009E73"),  # similarity, softmax, product: bluish green
    "mask": ("#f6d5c4", "#D55E00"),  # the self mask M: vermillion
}
INK = "#1a1a1a"
NOTE_INK = "#444444"
LABEL_SIZE = 13
NOTE_SIZE = 9.5
WIDTH, HEIGHT = 13.9, 6.55  # drawing extent in inches


@dataclass(frozen=True)
class Node:
    """A box (or a circle when ``round``) centred at (x, y), of width w and height h, in inches."""

    x: float
    y: float
    w: float
    h: float
    round: bool = False

    def side(self, where: str) -> tuple[float, float]:
        """The midpoint of the left, right, top or bottom side."""
        offsets = {
            "left": (-self.w / 2, 0),
            "right": (self.w / 2, 0),
            "top": (0, self.h / 2),
            "bottom": (0, -self.h / 2),
        }
        dx, dy = offsets[where]
        return self.x + dx, self.y + dy


# Rows: the SoftStep parameters, the SoftStep branch, the main path, the neighbours.
ROW_PARAMS, ROW_MASK, ROW_MAIN, ROW_NEIGHBOURS = 5.35, 3.85, 2.35, 0.85
COL_INPUT, COL_F, COL_Z, COL_SIM, COL_S, COL_SUM, COL_SOFTMAX, COL_PRODUCT, COL_OUT = (
    0.55,
    2.05,
    3.45,
    5.2,
    7.15,
    9.15,
    10.75,
    12.15,
    13.35,
)
NODES = {
    "X": Node(COL_INPUT, ROW_MAIN, 0.8, 0.6),
    "F": Node(COL_F, ROW_MAIN, 0.7, 0.6),
    "Z": Node(COL_Z, ROW_MAIN, 0.7, 0.6),
    "XN": Node(COL_INPUT, ROW_NEIGHBOURS, 0.8, 0.6),
    "FN": Node(COL_F, ROW_NEIGHBOURS, 0.7, 0.6),
    "ZN": Node(COL_Z, ROW_NEIGHBOURS, 0.7, 0.6),
    "sim": Node(COL_SIM, ROW_MAIN, 1.6, 0.6),
    "norm": Node(COL_SIM, ROW_MASK, 1.2, 0.95),
    "softstep": Node(COL_S, ROW_MASK, 1.9, 0.95),
    "params": Node(COL_S, ROW_PARAMS, 2.9, 0.95),
    "ln": Node(COL_SUM, ROW_MASK, 0.7, 0.6),
    "sum": Node(COL_SUM, ROW_MAIN, 0.56, 0.56, round=True),
    "M": Node(COL_SUM, ROW_NEIGHBOURS, 0.7, 0.6),
    "softmax": Node(COL_SOFTMAX, ROW_MAIN, 1.35, 0.6),
    "product": Node(COL_PRODUCT, ROW_MAIN, 0.56, 0.56, round=True),
    "yN": Node(COL_PRODUCT, ROW_NEIGHBOURS, 0.7, 0.6),
    "yhat": Node(COL_OUT, ROW_MAIN, 0.7, 0.6),
}
# node -> (colour group, label in the node, note beside it or None, where the note goes)
CONTENT = {
    "X": ("data", "$X$", "prediction\ndata", "below"),
    "F": ("extractor", "$F$", None, None),
    "Z": ("data", "$Z$", None, None),
    "XN": ("data", "$X_N$", "neighbour\ndata", "below"),
    "FN": ("extractor", "$F$", None, None),
    "ZN": ("data", "$Z_N$", None, None),
    "sim": ("nona", r"$\mathrm{Sim}(Z, Z_N)$", None, None),
    "norm": ("softstep", r"$\sim$", "min-max\nper row", "inside"),
    "softstep": ("softstep", r"$S(\cdot\,;\,a, b, t)$", r"SoftStep $S_1$ or $S_2$", "inside"),
    "params": (
        "softstep",
        r"$a,\ b,\ t$",
        r"pointwise: $\sigma(\mathrm{Linear}(z))$" "\n" r"or global: $\sigma(\theta)$",
        "inside",
    ),
    "ln": ("softstep", r"$\ln$", None, None),
    "sum": ("nona", "$+$", None, None),
    "M": ("mask", "$M$", "$-\\infty$ on the diagonal\n(training only)", "below"),
    "softmax": ("nona", "SoftMax", None, None),
    "product": ("nona", r"$\times$", None, None),
    "yN": ("data", "$y_N$", "neighbour\nlabels", "below"),
    "yhat": ("data", r"$\hat{y}$", "predictions", "below"),
}


def _side(name: str, where: str) -> tuple[float, float]:
    return NODES[name].side(where)


# name -> (polyline from tail to head, label or None, label position, label alignment, dashed)
ARROWS = {
    "X-F": ([_side("X", "right"), _side("F", "left")], None, None, None, False),
    "F-Z": ([_side("F", "right"), _side("Z", "left")], None, None, None, False),
    "XN-FN": ([_side("XN", "right"), _side("FN", "left")], None, None, None, False),
    "FN-ZN": ([_side("FN", "right"), _side("ZN", "left")], None, None, None, False),
    "Z-sim": ([_side("Z", "right"), _side("sim", "left")], None, None, None, False),
    "ZN-sim": ([_side("ZN", "right"), (COL_SIM, ROW_NEIGHBOURS), _side("sim", "bottom")], None, None, None, False),
    "Z-params": (
        [_side("Z", "top"), (COL_Z, ROW_PARAMS), _side("params", "left")],
        "pointwise\nonly",
        (COL_Z - 0.12, ROW_MASK + 0.3),
        ("right", "center"),
        True,
    ),
    "sim-norm": ([_side("sim", "top"), _side("norm", "bottom")], None, None, None, False),
    "norm-softstep": ([_side("norm", "right"), _side("softstep", "left")], None, None, None, False),
    "params-softstep": ([_side("params", "bottom"), _side("softstep", "top")], None, None, None, False),
    "softstep-ln": (
        [_side("softstep", "right"), _side("ln", "left")],
        "mask",
        (0.5 * (COL_S + 0.95 + COL_SUM - 0.35), ROW_MASK + 0.1),
        ("center", "bottom"),
        False,
    ),
    "ln-sum": ([_side("ln", "bottom"), _side("sum", "top")], None, None, None, False),
    "sim-sum": (
        [_side("sim", "right"), _side("sum", "left")],
        "residual: un-normalised Sim",
        (0.5 * (COL_SIM + 0.8 + COL_SUM - 0.28), ROW_MAIN - 0.12),
        ("center", "top"),
        False,
    ),
    "M-sum": ([_side("M", "top"), _side("sum", "bottom")], None, None, None, False),
    "sum-softmax": ([_side("sum", "right"), _side("softmax", "left")], None, None, None, False),
    "softmax-product": ([_side("softmax", "right"), _side("product", "left")], None, None, None, False),
    "yN-product": ([_side("yN", "top"), _side("product", "bottom")], None, None, None, False),
    "product-yhat": ([_side("product", "right"), _side("yhat", "left")], None, None, None, False),
}
# The SoftStep branch sits in a dashed frame: (x0, y0, x1, y1) in inches, and its title.
FRAME = (COL_SIM - 0.8, ROW_MASK - 0.62, COL_SUM + 0.6, ROW_PARAMS + 0.7)
FRAME_TITLE = "SoftStep (Algorithm 1)"


def _draw_node(ax, name: str) -> None:
    node = NODES[name]
    group, label, note, note_at = CONTENT[name]
    fill, edge = PALETTE[group]
    if node.round:
        patch = Circle((node.x, node.y), node.w / 2, facecolor=fill, edgecolor=edge, linewidth=1.6)
    else:
        patch = FancyBboxPatch(
            (node.x - node.w / 2, node.y - node.h / 2),
            node.w,
            node.h,
            boxstyle="round,pad=0,rounding_size=0.08",
            facecolor=fill,
            edgecolor=edge,
            linewidth=1.6,
        )
    patch.set_gid(name)
    ax.add_patch(patch)
    label_y = node.y + (0.13 if note_at == "inside" else 0)
    note_y = {"inside": node.y - 0.08, "below": node.y - node.h / 2 - 0.08}.get(note_at)
    if note_at == "inside" and "\n" in note:
        label_y, note_y = node.y + 0.25, node.y + 0.05
    ax.text(node.x, label_y, label, ha="center", va="center", fontsize=LABEL_SIZE, color=INK, gid=f"{name}-label")
    if note is not None:
        ax.text(
            node.x,
            note_y,
            note,
            ha="center",
            va="top",
            fontsize=NOTE_SIZE,
            color=NOTE_INK,
            linespacing=1.15,
            gid=f"{name}-note",
        )


def _draw_arrow(ax, name: str) -> None:
    points, label, label_xy, align, dashed = ARROWS[name]
    codes = [Path.MOVETO] + [Path.LINETO] * (len(points) - 1)
    arrow = FancyArrowPatch(
        path=Path(points, codes),
        arrowstyle="-|>,head_length=5,head_width=3",
        color=INK,
        linewidth=1.3,
        linestyle=(0, (4, 2.5)) if dashed else "-",
        shrinkA=0,
        shrinkB=0,
        joinstyle="miter",
    )
    arrow.set_gid(name)
    ax.add_patch(arrow)
    if label is not None:
        ax.text(
            *label_xy,
            label,
            ha=align[0],
            va=align[1],
            fontsize=NOTE_SIZE,
            color=NOTE_INK,
            style="italic",
            gid=f"{name}-label",
        )


def draw_nona_block() -> matplotlib.figure.Figure:
    """Draw the NONA regression block with SoftStep attention masking (the paper's Figure 2)."""
    fig = matplotlib.figure.Figure(figsize=(WIDTH * 0.78, HEIGHT * 0.78))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(0, HEIGHT)
    ax.set_axis_off()
    x0, y0, x1, y1 = FRAME
    frame = FancyBboxPatch(
        (x0, y0),
        x1 - x0,
        y1 - y0,
        boxstyle="round,pad=0,rounding_size=0.15",
        facecolor="none",
        edgecolor=PALETTE["softstep"][1],
        linewidth=1.2,
        linestyle=(0, (5, 3)),
    )
    frame.set_gid("softstep-frame")
    ax.add_patch(frame)
    ax.text(
        x1,
        y1 + 0.08,
        FRAME_TITLE,
        ha="right",
        va="bottom",
        fontsize=NOTE_SIZE,
        color=NOTE_INK,
        fontweight="bold",
        gid="softstep-frame-label",
    )
    # F is one network applied to both inputs: a dotted tie between its two copies.
    top, bottom = _side("FN", "top"), _side("F", "bottom")
    ax.plot(
        [top[0], bottom[0]],
        [top[1], bottom[1]],
        color=PALETTE["extractor"][1],
        linewidth=1.2,
        linestyle=":",
        gid="shared-weights",
    )
    ax.text(
        top[0] + 0.1,
        0.5 * (top[1] + bottom[1]),
        "shared\nweights",
        ha="left",
        va="center",
        fontsize=NOTE_SIZE,
        color=NOTE_INK,
        linespacing=1.1,
        gid="shared-weights-label",
    )
    for name in ARROWS:
        _draw_arrow(ax, name)
    for name in NODES:
        _draw_node(ax, name)
    return fig
