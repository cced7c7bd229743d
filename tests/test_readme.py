"""The Python examples of the README and of the docs/ pages run as written."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _examples(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def test_readme_has_examples():
    assert _examples(ROOT / "README.md")
    assert (ROOT / "docs").is_dir(), "docs/ must lie beside tests/ (tools/check_wheel.sh copies it)"


@pytest.mark.parametrize("page", [p for p in PAGES if _examples(p)], ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # they may write files
    for block in _examples(page):
        exec(compile(block, str(page), "exec"), {"__name__": "__main__"})


def test_links_to_docs_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(((?:docs/)?[\w-]+\.(?:md|png))(?:#[\w-]+)?\)",
                                 page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)
