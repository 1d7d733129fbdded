"""The course's website (``make site`` -> ``build/site/``), checked as built and in headless Chromium.

The site is built (incrementally) by ``site/build.py``, the command behind ``make site``. Static checks on the HTML:
one page per lesson with navigation and the notebook download, the README's tables on the site, no script,
stylesheet, image or font from the internet, every internal link and anchor resolves. In the browser (Debian's
``chromium`` + ``chromium-driver``, driven by Selenium, pages served from 127.0.0.1 with every other host unresolvable):
every page opens without console errors (level SEVERE), every image loads (``naturalWidth > 0``), MathJax renders
every equation, nothing is fetched from another origin, and search finds a lesson. Screenshots of the landing page
and of a lesson are kept in ``build/site-check/``. Without the ``[site]`` extra or without a browser the tests
report themselves skipped, naming what is missing.
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "site"
CHECK = ROOT / "build" / "site-check"
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SITE_PACKAGES = ("sphinx", "myst_nb", "sphinx_book_theme", "sphinx-mathjax-offline", "bs4")
EXTERNAL = re.compile(r"^(https?:)?//", re.I)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])((?:https?:)?//[^'")\s]+)""", re.I)


def _build(*extra: str, out: Path = SITE, doctrees: Path | None = None) -> None:
    """Runs the site's build (``site/build.py``'s Sphinx command line) and fails with its output if it fails."""
    spec = importlib.util.spec_from_file_location("course_site_build", ROOT / "site" / "build.py")
    site_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site_build)
    args = site_build.sphinx_arguments(out, doctrees or site_build.DOCTREES)
    done = subprocess.run([sys.executable, "-m", "sphinx", *args, *extra], capture_output=True, text=True)
    assert done.returncode == 0, f"the site's build failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def site() -> Path:
    """``build/site/``, brought up to date (Sphinx rebuilds only what changed)."""
    missing = [name for name in SITE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"SITE NOT TESTED: the [site] extra is missing ({', '.join(missing)}): "
                    "pip install -c constraints.txt -e '.[site]' (make site / make test do it)")
    _build()
    return SITE


def _plain(text: str) -> str:
    """``text`` with Sphinx's typographic quotes turned back into plain ones and its whitespace collapsed."""
    return " ".join(text.translate(str.maketrans("‘’“”", "''\"\"")).split())


def _soup(path: Path):
    from bs4 import BeautifulSoup

    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _pages(site: Path) -> list[Path]:
    """Every HTML page of the site (not the copied sources or downloads)."""
    skip = {"_static", "_sources", "_downloads", "_images"}
    return sorted(p for p in site.rglob("*.html") if not skip & set(p.relative_to(site).parts))


def _fetched_urls(soup) -> list[str]:
    """The URLs a page makes the browser fetch on its own: scripts, stylesheets, icons, images, frames, media, and
    ``url()`` / ``@import`` in inline styles."""
    urls = [tag["src"] for tag in soup.find_all(src=True)]
    urls += [tag["href"] for tag in soup.find_all("link", href=True)]
    urls += [tag["data"] for tag in soup.find_all("object", data=True)]
    urls += [tag["srcset"] for tag in soup.find_all(srcset=True)]
    styles = [tag.get_text() for tag in soup.find_all("style")] + [tag["style"] for tag in soup.find_all(style=True)]
    urls += [m for style in styles for m in CSS_URL.findall(style)]
    return urls


def _local_target(site: Path, page: Path, url: str) -> tuple[Path, str] | None:
    """The file and anchor a relative URL of ``page`` points to; None for other schemes (mailto:, data:, http:)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    target = page if not path else (page.parent / path).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def _notebook_title(notebook: Path) -> str:
    """The first ``# heading`` of the notebook's markdown cells."""
    cells = json.loads(notebook.read_text())["cells"]
    lines = ("".join(c["source"]).splitlines() for c in cells if c["cell_type"] == "markdown")
    return next(line[2:].strip() for cell in lines for line in cell if line.startswith("# "))


def test_one_page_per_lesson_with_navigation_and_its_notebook(site):
    assert LESSONS, "no notebooks/NN_*.ipynb found"
    landing = _soup(site / "index.html")
    landing_links = {a["href"] for a in landing.find_all("a", href=True)}
    for number, notebook in enumerate(LESSONS):
        page = site / "lessons" / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}"
        soup = _soup(page)
        title = _notebook_title(notebook)
        assert _plain(soup.find("h1").get_text()).rstrip("#").strip() == title
        assert f"lessons/{notebook.stem}.html" in landing_links, f"the landing page does not link {notebook.name}"
        downloads = [a for a in soup.select("p.lesson-links a.download") if a["href"].endswith(notebook.name)]
        assert downloads, f"{page.name} has no download link to {notebook.name}"
        assert (page.parent / downloads[0]["href"]).read_bytes() == notebook.read_bytes()
        if number + 1 < len(LESSONS):
            following = LESSONS[number + 1].stem
            nxt = soup.select_one("a.right-next")
            assert nxt is not None and nxt["href"] == f"{following}.html", f"{page.name} does not lead to {following}"


def _readme_tables(text: str) -> list[list[str]]:
    """The header rows (cells without markdown emphasis or code marks) of the markdown tables in ``text``."""
    lines = text.splitlines()
    return [
        [_plain(re.sub(r"[*`]", "", cell)) for cell in line.strip().strip("|").split("|")]
        for line, below in zip(lines, lines[1:])
        if line.startswith("|") and re.fullmatch(r"\|(\s*-+\s*\|)+", below.strip())
    ]


def _html_headers(soup) -> list[list[str]]:
    return [[_plain(th.get_text()) for th in thead.find_all("th")] for thead in soup.find_all("thead")]


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def test_readme_tables_are_on_the_site_and_the_results_on_the_landing_page(site):
    readme = (ROOT / "README.md").read_text()
    everywhere = [row for page in _pages(site) for row in _html_headers(_soup(page))]
    landing = _html_headers(_soup(site / "index.html"))
    tables = _readme_tables(readme)
    assert len(tables) >= 5
    for header in tables:
        assert header in everywhere, f"README table {header} is not on the site"
    results = _between(readme, "## Lesson map", "## Two profiles") + _between(
        readme, "### The toy backbone", "## Going full scale")
    for header in _readme_tables(results):
        assert header in landing, f"README table {header} is not on the landing page"


def test_no_page_fetches_anything_from_the_internet(site):
    offenders = []
    for page in _pages(site):
        offenders += [f"{page.relative_to(site)}: {url}" for url in _fetched_urls(_soup(page)) if EXTERNAL.match(url)]
    for css in (site / "_static").rglob("*.css"):
        offenders += [f"{css.relative_to(site)}: {url}" for url in CSS_URL.findall(css.read_text(errors="replace"))]
    assert not offenders, "fetched from the internet:\n" + "\n".join(offenders)
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not served from the site"


def test_every_internal_link_and_anchor_resolves(site):
    ids: dict[Path, set[str]] = {}
    broken = []
    for page in _pages(site):
        soup = _soup(page)
        urls = [a["href"] for a in soup.find_all("a", href=True)] + _fetched_urls(soup)
        for url in urls:
            target = _local_target(site, page, url)
            if target is None:
                continue
            path, anchor = target
            if not path.is_file() or site.resolve() not in path.resolve().parents:
                broken.append(f"{page.relative_to(site)}: {url} (no such file in the site)")
            elif anchor and path.suffix == ".html":
                if path not in ids:
                    ids[path] = {tag["id"] for tag in _soup(path).find_all(id=True)}
                if anchor not in ids[path]:
                    broken.append(f"{page.relative_to(site)}: {url} (no element with id {anchor!r})")
    assert not broken, "broken links:\n" + "\n".join(sorted(set(broken)))


def test_student_version_is_linked_only_where_it_exists(tmp_path):
    """With ``build/student``-style copies of two lessons, exactly those two pages link them."""
    missing = [name for name in SITE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"SITE NOT TESTED: the [site] extra is missing ({', '.join(missing)})")
    student = tmp_path / "student"
    student.mkdir()
    chosen = LESSONS[:2]
    for notebook in chosen:
        shutil.copy(notebook, student / notebook.name)
    out = tmp_path / "site"
    _build("-D", f"course_student_dir={student}", out=out, doctrees=tmp_path / "doctrees")
    for notebook in LESSONS:
        links = [a for a in _soup(out / "lessons" / f"{notebook.stem}.html").select("p.lesson-links a.download")]
        student_links = [a for a in links if "student/" in a.get_text()]
        if notebook in chosen:
            assert len(student_links) == 1
            copied = (out / "lessons" / student_links[0]["href"]).resolve()
            assert copied.read_bytes() == notebook.read_bytes()
        else:
            assert not student_links, f"{notebook.name} links a student version that does not exist"


# ---------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Selenium, with the system's chromedriver (Selenium never downloads one)."""
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("NO BROWSER TEST: selenium is missing: pip install -c constraints.txt -e '.[site]'")
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("NO BROWSER TEST: headless Chromium is missing (binary: "
                    f"{binary or 'not found'}, chromedriver: {driver_path or 'not found'}): "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--disable-background-networking", "--no-first-run",
                     # any host but the local server is unresolvable: a page that needs the internet fails here
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP on 127.0.0.1 (its base URL), as a reader's web server would serve it."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


WAIT_FOR_IMAGES_AND_MATH = """
const done = arguments[arguments.length - 1];
const images = [...document.images].map(img => { img.loading = "eager"; return img.decode().catch(() => null); });
const math = window.MathJax && MathJax.startup ? MathJax.startup.promise : Promise.resolve();
Promise.all([...images, math]).then(() => done({
  broken: [...document.images].filter(img => !(img.naturalWidth > 0)).map(img => img.src),
  images: document.images.length,
  math: document.querySelectorAll("span.math, div.math").length,
  rendered: document.querySelectorAll("mjx-container").length,
  errors: document.querySelectorAll("mjx-merror").length,
  resources: performance.getEntriesByType("resource").map(r => r.name),
}));
"""


def test_every_page_renders_in_chromium(site, served, browser):
    problems = []
    totals = {"pages": 0, "images": 0, "equations": 0}
    for page in _pages(site):
        name = page.relative_to(site).as_posix()
        browser.get(served + name)
        state = browser.execute_async_script(WAIT_FOR_IMAGES_AND_MATH)
        severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        problems += [f"{name}: console error: {message}" for message in severe]
        problems += [f"{name}: image did not load: {src[:120]}" for src in state["broken"]]
        if state["math"] and (state["rendered"] < state["math"] or state["errors"]):
            problems.append(f"{name}: {state['math']} equations, {state['rendered']} rendered by MathJax, "
                            f"{state['errors']} MathJax errors")
        problems += [f"{name}: fetched from elsewhere: {url}" for url in state["resources"] if not url.startswith(served)]
        totals["pages"] += 1
        totals["images"] += state["images"]
        totals["equations"] += state["rendered"]
    assert not problems, "\n".join(problems)
    assert totals["pages"] >= len(LESSONS) + 1
    assert totals["images"] > 0 and totals["equations"] > 0, totals


def test_search_finds_a_lesson(site, served, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served + "search.html?q=Sinkhorn")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements("css selector", "#search-results li"))
    hits = [a.get_attribute("href") for a in browser.find_elements("css selector", "#search-results li a")]
    assert any("lessons/05_pass_representation.html" in href for href in hits), hits


def test_screenshots_of_the_landing_page_and_a_lesson(site, served, browser):
    """Keeps ``build/site-check/landing.png`` and ``lesson.png``: the top of lesson 03 (its title, the notebook link
    and the equations it implements, typeset by MathJax)."""
    CHECK.mkdir(parents=True, exist_ok=True)
    lesson = next((p for p in LESSONS if p.name.startswith("03_")), LESSONS[0])
    shots = {"landing.png": "index.html", "lesson.png": f"lessons/{lesson.stem}.html"}
    for file, page in shots.items():
        browser.execute_script("sessionStorage.clear(); localStorage.clear();")  # as on a first visit
        browser.get(served + page)
        browser.execute_async_script(WAIT_FOR_IMAGES_AND_MATH)
        assert browser.save_screenshot(str(CHECK / file)), f"no screenshot of {page}"
        assert (CHECK / file).stat().st_size > 10_000
