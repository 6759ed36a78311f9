"""Where the companion reads and writes: the repository root and the generated-files tree."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("NONA_BUILD", REPO_ROOT / "build"))
EXECUTED_DIR = BUILD_DIR / "executed"
# Everything under SITE_EXTRA_DIR is copied verbatim into the website's root.
SITE_EXTRA_DIR = BUILD_DIR / "site"
FIGURE_DIR = SITE_EXTRA_DIR / "figures"
