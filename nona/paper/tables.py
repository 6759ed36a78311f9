"""Formatting shared by the book's tables: mean ± std cells and Markdown tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# The book reports MSE on min-max scaled labels multiplied by 10³, as the paper's Table 1 does.
MSE_SCALE = 1e3


def mean_std(mean: float, std: float, scale: float = MSE_SCALE, bold: bool = False, std_digits: int = 2) -> str:
    """``mean ± std`` after multiplying by ``scale`` (3 significant digits for the mean), optionally in bold.

    The std gets ``std_digits`` significant digits: 2 for this build's numbers, 3 to
    match the paper's printed tables.
    """
    text = f"{mean * scale:.3g} ± {std * scale:.{std_digits}g}"
    return f"**{text}**" if bold else text


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures as the paper prints them: 28.0, 0.435, 303 (no exponent)."""
    import numpy as np

    text = np.format_float_positional(float(value), precision=digits, unique=False, fractional=False, trim="k")
    return text.rstrip(".")


def settings_text(settings: dict) -> str:
    """Chosen settings as words for a page: ``{"n_neighbors": 7, "p": 1}`` -> ``"n neighbors 7, p 1"``."""
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in settings.items())


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table from a header and rows (cells are converted with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
