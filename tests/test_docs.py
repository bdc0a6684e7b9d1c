"""The documentation: the generated API page is current, links resolve, the examples
in docstrings run."""
import doctest
import importlib.util
import re
from pathlib import Path

import pytest

import adamc

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_api_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (DOCS / "api.md").read_text() == gen.generate(), \
        "docs/api.md is out of date: run python docs/gen_api.py"


def test_api_reference_covers_the_public_api():
    text = (DOCS / "api.md").read_text()
    for name in adamc.__all__:
        if name in ("schedules", "distributed", "__version__"):
            continue
        assert f"### adamc.{name}" in text, name
    for name in adamc.distributed.__all__:
        assert f"### adamc.distributed.{name}" in text, name


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")) + ["README.md"])
def test_relative_links_resolve(page):
    path = ROOT / page if page == "README.md" else DOCS / page
    for target in re.findall(r"\]\(([^)#:\s]+\.(?:md|png|py))(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{page} links to missing {target}"


@pytest.mark.parametrize("module", ["adamc", "adamc.optim", "adamc.schedules"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_api_reference_shows_no_private_parameters():
    assert "_extra" not in (DOCS / "api.md").read_text()


README = ROOT / "README.md"


def test_readme_is_short_and_names_the_ci_command():
    """Issue 25: a README a newcomer reads to the end; the measurement logs live in
    docs/performance.md and benchmarks/results/. Its test command is the one CI runs."""
    text = README.read_text()
    assert len(text.splitlines()) <= 200, "README.md is over 200 lines: move detail to docs/"
    assert "pip install -e . && python -m adamc" in text
    assert 'pip install -e ".[test]" && python -m pytest' in text
    ci = ROOT / ".ci" / "run"
    if ci.exists():  # not copied next to an installed wheel's tests (tools/test_wheel.py)
        assert 'pip install -e ".[test]" && python -m pytest' in ci.read_text()


def test_readme_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "(10000, 3) 0" in out
