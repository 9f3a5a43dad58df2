"""The docs speak of the product: every relative link and every referenced repository file exists, and
no page narrates how the work was organised."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NARRATION = re.compile(r"\b(sessions?|lent)\b|\bissues? #?\d", re.IGNORECASE)
ALLOWED = ("onnxruntime session", "inferencesession")  # the library's own word


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_resolve(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_no_page_narrates_its_own_making(page):
    for number, line in enumerate(page.read_text().splitlines(), 1):
        found = NARRATION.search(line)
        if found and not any(word in line.lower() for word in ALLOWED):
            pytest.fail(f"{page.name}:{number}: {found.group(0)!r} in {line.strip()[:120]!r}")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_page_a_doc_names_exists(page):
    for name in re.findall(r"(?<![\w/.-])((?:\.\./)?[\w/.-]*\.md)\b", page.read_text()):
        assert any((base / name).exists() for base in (page.parent, ROOT, ROOT / "docs")), f"{page.name} names {name}, not in the repository"


def test_the_format_spec_lists_every_allowed_function_method_and_layer_argument():
    from slimzip.graph import FUNCTIONS, LAYERS, METHODS

    spec = (ROOT / "docs" / "FORMAT.md").read_text()
    for name in (*FUNCTIONS, *METHODS):
        assert f"`{name}`" in spec, name
    for name, layer in LAYERS.items():
        assert f"{name}: {', '.join(layer.fields) or '(none)'}" in " ".join(spec.split()), name


@pytest.mark.parametrize("name", ["lenet-5-bn", "resnet20"])
def test_the_registry_reference_is_current(name):
    """docs/registry.md (what a reader outside slimzip needs for a version-4 file naming a registry
    model) says what the registry code builds: regenerate a section and compare."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "make_registry.py"
    spec = importlib.util.spec_from_file_location("make_registry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.section(name) in (path.parent / "registry.md").read_text()
