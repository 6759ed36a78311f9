"""The published site's identity: its address, the repository and the companion's version.

The address and the repository are written once, in ``_config.yml`` (``html.baseurl``
and ``repository.url``); the version is the package's. Figure citations, the site
build (``book/_ext/nona_site.py``), the release bundle and the citation tests read
them from here.
"""

from __future__ import annotations

import functools
import os
from importlib import metadata

from nona.io.paths import REPO_ROOT

SITE_CONFIG = REPO_ROOT / "_config.yml"
SITE_URL_ENV = "NONA_SITE_URL"


@functools.lru_cache(maxsize=1)
def _site_config() -> dict:
    import yaml

    if not SITE_CONFIG.is_file():
        raise FileNotFoundError(f"{SITE_CONFIG} does not exist; the site's address is configured there (html.baseurl)")
    return yaml.safe_load(SITE_CONFIG.read_text()) or {}


def site_url() -> str:
    """The published site's base address, ending in ``/``.

    It is ``$NONA_SITE_URL``, else ``html.baseurl`` of ``_config.yml``.
    """
    url = os.environ.get(SITE_URL_ENV) or (_site_config().get("html") or {}).get("baseurl") or ""
    if not url.startswith(("https://", "http://")):
        raise ValueError(
            f"the site's address must be an http(s) URL (html.baseurl in _config.yml or {SITE_URL_ENV}); got {url!r}"
        )
    return url.rstrip("/") + "/"


def repository_url() -> str:
    """The source repository's address (``repository.url`` of ``_config.yml``)."""
    url = (_site_config().get("repository") or {}).get("url") or ""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"repository.url in _config.yml must be an http(s) URL; got {url!r}")
    return url.rstrip("/")


def site_title() -> str:
    """The site's title (``title`` of ``_config.yml``)."""
    return str(_site_config().get("title") or "NONA companion")


def companion_version() -> str:
    """The companion's version: the installed ``nona`` distribution's, else the package's ``__version__``."""
    try:
        return metadata.version("nona")
    except metadata.PackageNotFoundError:
        import nona

        return nona.__version__


def page_url(page: str, anchor: str | None = None) -> str:
    """The address of an executed page of the site (``build/executed/<page>.html``), with an optional anchor."""
    return f"{site_url()}build/executed/{page}.html" + (f"#{anchor}" if anchor else "")
