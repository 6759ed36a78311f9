"""The built site in a real browser: pages load, images render, downloads resolve, the console stays clean.

Run after `make book` with `pytest -m browser` (CI does); it drives Debian's
/usr/bin/chromium through /usr/bin/chromedriver and serves _build/html on 127.0.0.1.
Every page is also read as a reader meets it: no machine path, warning, traceback or
template sentence in its text, nothing wider than the content column outside a scroll
box. Screenshots of every page at desktop (1280 px) and narrow (400 px) widths go to
build/screenshots/ for review.
"""

from __future__ import annotations

import functools
import re
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "build" / "screenshots"
SKIPPED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
# What a published page must not show: the build machine's paths, warnings and tracebacks
# that leaked from a notebook, and the template's own description of itself.
LEAKS = {
    # Absolute paths of a machine (relative ones such as .venv/bin/python are instructions).
    "machine path": re.compile(r"(?<![\w.~])/(work|home|root|tmp|usr|opt|private|Users)/|site-packages"),
    "warning": re.compile(r"\b\w*Warning\b"),
    "traceback": re.compile(r"Traceback \(most recent call last\)"),
    "template sentence": re.compile(r"This notebook is the template"),
}
# Pages whose prose legitimately names a warning class (the API reference documents one).
WARNING_NAMED = {"book/api.html"}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output readable
        pass


@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").exists():
        pytest.fail(f"{SITE} has no built site; run `make book` first")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_window_size(1280, 1000)
    yield driver
    driver.quit()


def site_pages() -> list[str]:
    pages = [p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")]
    return sorted(p for p in pages if p not in SKIPPED_PAGES and not p.startswith(("_static/", "_sources/")))


def load(browser, url: str) -> None:
    browser.get(url)
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const ready = () => document.readyState === 'complete' && Array.from(document.images).every(i => i.complete);"
        "const poll = () => ready() ? done(true) : setTimeout(poll, 50); poll();"
    )


def test_every_page_loads_with_rendered_images_and_a_clean_console(browser, site_url):
    pages = site_pages()
    assert len(pages) >= 10, pages
    problems = []
    for page in pages:
        browser.get_log("browser")  # drop what earlier pages left
        load(browser, site_url + page)
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src);"
        )
        errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        if broken or errors:
            problems.append(f"{page}: broken images {broken}, console errors {errors}")
    assert not problems, "\n".join(problems)


def test_every_figure_download_link_resolves(browser, site_url):
    checked = 0
    for page in site_pages():
        load(browser, site_url + page)
        links = browser.execute_script("return Array.from(document.querySelectorAll('a[download]')).map(a => a.href);")
        for link in links:
            with urllib.request.urlopen(link) as response:
                assert response.status == 200 and len(response.read()) > 0, f"{page}: {link}"
            checked += 1
    assert checked >= 30  # three formats for each of the book's figures, on their pages and in the gallery


def test_mathjax_renders_offline(browser, site_url):
    load(browser, site_url + "build/executed/method.html")
    browser.set_script_timeout(20)
    rendered = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const poll = () => document.querySelector('mjx-container') ? done(true) : setTimeout(poll, 100); poll();"
    )
    assert rendered
    sources = browser.execute_script(
        "return Array.from(document.scripts).map(s => s.src).filter(s => s.includes('mathjax'));"
    )
    assert sources and all(src.startswith(site_url) for src in sources), sources  # served by the site, not a CDN


def test_no_page_shows_paths_warnings_tracebacks_or_template_text(browser, site_url):
    problems = []
    for page in site_pages():
        load(browser, site_url + page)
        text = browser.execute_script(
            "return document.querySelector('main') ? document.querySelector('main').innerText "
            ": document.body.innerText;"
        )
        for what, pattern in LEAKS.items():
            if what == "warning" and page in WARNING_NAMED:
                continue
            found = pattern.search(text)
            if found:
                start = max(found.start() - 60, 0)
                problems.append(f"{page}: {what}: ...{text[start : found.end() + 60]!r}")
    assert not problems, "\n".join(problems)


# Elements wider than the article column that are not inside a box that scrolls sideways.
OVERFLOWING = """
const article = document.querySelector('.bd-article') || document.querySelector('main');
if (!article) return [];
const limit = article.getBoundingClientRect().right + 1;
const scrolls = el => { for (let e = el; e && e !== article; e = e.parentElement) {
  const style = getComputedStyle(e);
  if (['auto', 'scroll', 'hidden'].includes(style.overflowX) && e.clientWidth < e.scrollWidth + 1) return true;
} return false; };
return Array.from(article.querySelectorAll('table, img, svg, pre, mjx-container, .math, figure, .output'))
  .filter(el => el.getBoundingClientRect().width > 0 && el.getBoundingClientRect().right > limit && !scrolls(el))
  .slice(0, 5).map(el => el.tagName + '.' + el.className + \
' right=' + Math.round(el.getBoundingClientRect().right) + ' limit=' + Math.round(limit));
"""


@pytest.mark.parametrize("width", [1280, 400])
def test_nothing_runs_past_the_content_column(browser, site_url, width):
    browser.set_window_size(width, 1200)
    problems = []
    for page in site_pages():
        load(browser, site_url + page)
        wide = browser.execute_script(OVERFLOWING)
        if wide:
            problems.append(f"{page} at {width} px: {wide}")
    browser.set_window_size(1280, 1000)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("width", [1280, 400])
def test_review_screenshots(browser, site_url, width):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(width, 1600)
    for page in site_pages():
        load(browser, site_url + page)
        name = page.removesuffix(".html").replace("/", "-")
        path = SCREENSHOTS / f"{name}-{width}.png"
        assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    browser.set_window_size(1280, 1000)
