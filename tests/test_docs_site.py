"""The documentation site builds with ``mkdocs build --strict``: a broken link, a page missing
from the nav's files or an API reference (``::: mixupe.NAME``) that no longer resolves fails
here. The API pages must document every name of ``mixupe.__all__`` and of the subpackages'
``__all__``, and the site's home page is the README with its links made relative to docs/.

Needs the ``docs`` extra (mkdocs-material, mkdocstrings-python); skipped without it.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEEDED = {"mkdocs": "mkdocs", "material": "mkdocs-material",
          "mkdocstrings_handlers.python": "mkdocstrings-python"}


def _missing() -> list[str]:
    missing = []
    for module, package in NEEDED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return missing


# Each API page and the modules whose __all__ it must document in full.
API_PAGES = {
    "mixupe": ["mixupe"], "objectives": ["mixupe.objectives"],
    "functional": ["mixupe.functional"], "functional-masks": ["mixupe.functional.masks"],
    "functional-cuts": ["mixupe.functional.cuts"],
    "functional-transport": ["mixupe.functional.transport"],
    "collate": ["mixupe.collate"], "sam": ["mixupe.sam"],
    "data": ["mixupe.data"], "models": ["mixupe.models"], "engine": ["mixupe.engine"],
    "bench": ["mixupe.bench"], "lightning": ["mixupe.lightning"], "hf": ["mixupe.hf"],
    "errors": ["mixupe.errors"],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing()
    if missing:
        pytest.skip(f"mkdocs is not installed ({', '.join(missing)} missing): "
                    "pip install -e '.[docs]' to build the documentation site")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=900, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out


def test_site_builds_strict_with_every_page(site):
    for page in ["index.html", "METHOD/index.html", "DATA/index.html", "RESULTS/index.html",
                 "FIDELITY/index.html", "SCALE-OUT/index.html", "ARCHITECTURE/index.html"]:
        assert (site / page).is_file(), page
    guide = sorted(p.stem for p in (ROOT / "docs" / "guide").glob("*.md"))
    assert guide, "no user guide"
    for name in guide:
        assert (site / "guide" / name / "index.html").is_file(), name
    # the plots RESULTS.md embeds are published with it
    assert (site / "results" / "converged-differences.png").is_file()


def _public_names(module_name: str) -> list[str]:
    if module_name == "mixupe.lightning":
        pytest.importorskip("pytorch_lightning")
    if module_name == "mixupe.hf":
        pytest.importorskip("transformers")
    module = importlib.import_module(module_name)
    return [name for name in module.__all__ if not name.startswith("_")]


@pytest.mark.parametrize("page", sorted(API_PAGES))
def test_api_pages_document_every_public_name(site, page):
    text = html.unescape((site / "api" / page / "index.html").read_text(encoding="utf-8"))
    anchors = set(re.findall(r'id="([^"]+)"', text))
    for module_name in API_PAGES[page]:
        assert module_name in anchors, f"api/{page}: no section for {module_name}"
        for name in _public_names(module_name):
            qualified = f"{module_name}.{name}"
            if inspect.ismodule(getattr(importlib.import_module(module_name), name)):
                # a module (mixupe.functional) is documented on a page of its own, linked
                assert any(qualified in names for names in API_PAGES.values()), qualified
                assert re.search(r'href="[^"]*' + name + '/"', text), f"api/{page}: {name}"
                continue
            assert qualified in anchors, f"api/{page}: {qualified}"


def test_bench_page_documents_the_command_line(site):
    text = (site / "api" / "bench" / "index.html").read_text(encoding="utf-8")
    assert 'id="mixupe.cli.main"' in text


def test_site_home_is_the_readme_with_site_links():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    home = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert home == readme.replace("](docs/", "]("), (
        "docs/index.md must be README.md with '](docs/' replaced by '](': regenerate it with "
        "python -c \"from pathlib import Path; t = Path('README.md').read_text(); "
        "Path('docs/index.md').write_text(t.replace('](docs/', ']('))\"")
