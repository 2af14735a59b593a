"""The README and the documentation site: every example runs in a test or says it does not, the
README's quick start runs (at tiny settings), the tutorial notebooks are committed without outputs,
and the site builds with ``--strict`` (a broken link, a missing reference or a failing notebook
fails). The site's build executes the notebooks, so it is also their test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = DOCS / "pages"
README = ROOT / "README.md"
NOTEBOOKS = sorted((PAGES / "tutorials").glob("*.ipynb"))

#: What precedes an example a test runs: ``<!-- runs in tests/test_x.py ... -->``.
RUNS = re.compile(r"<!-- runs in (tests/test_\w+\.py)\b")
#: What the first line of an example no test runs says.
NOT_RUN = "not run by the tests"
#: Languages whose fenced blocks are examples (``text`` blocks and the layout tree are not).
EXAMPLES = ("bash", "sh", "python", "console")


def _blocks(markdown: str) -> list[tuple[int, str, str, str]]:
    """``[(line, language, the line before the block, the block's text)]`` of Markdown text."""
    lines = markdown.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        out.append((i + 1, m.group(1), before, "\n".join(lines[i + 1 : j])))
        i = j + 1
    return out


def _markdown_files() -> list[Path]:
    return [README, ROOT / "bench" / "README.md", *sorted(PAGES.rglob("*.md"))]


def test_readme_is_one_screen_of_essentials():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/pages/"
    head = "\n".join(lines[:8])
    assert "![" in head and (ROOT / "docs/pages/assets/readme_figure.png").is_file()
    assert (ROOT / "docs/pages/assets/readme_figure.png").stat().st_size < 300 * 1024
    for name in ("scripts/run.sh", "scripts/test.sh --all", "mkdocs build --strict"):
        assert name in README.read_text(encoding="utf-8")


def test_every_example_runs_in_a_test_or_says_it_does_not():
    unmarked = []
    for path in _markdown_files():
        for line, lang, before, text in _blocks(path.read_text(encoding="utf-8")):
            if lang not in EXAMPLES:
                continue
            m = RUNS.search(before)
            if m:
                assert (ROOT / m.group(1)).is_file(), f"{path}:{line} names {m.group(1)}"
                test = (ROOT / m.group(1)).read_text(encoding="utf-8")
                assert path.name in test, f"{m.group(1)} does not read {path.name} ({path}:{line})"
            elif NOT_RUN not in text.splitlines()[0]:
                unmarked.append(f"{path.relative_to(ROOT)}:{line}")
    assert not unmarked, f"examples neither run by a test nor marked '{NOT_RUN}': {unmarked}"


def test_notebooks_are_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["analysing_atlas.ipynb", "first_atlas.ipynb"]
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, path.name


def _quick_start(lang: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start") : text.index("## What it does")]
    [block] = [t for _, lg, _, t in _blocks(section) if lg == lang]
    return block


@pytest.mark.slow
def test_readme_quick_start_runs(tmp_path, monkeypatch):
    """The README's quick start as written, at tiny settings: ``--size 32 --steps 4`` added to
    ``vizjax atlas``, the Python block's recipe made 32 px and 4 steps; the real default weights."""
    vizjax_cli = Path(sys.executable).parent / "vizjax"
    for line in _quick_start("bash").splitlines():
        argv = line.split("#")[0].split()
        assert argv[0] == "vizjax", line
        if argv[1] == "atlas":
            argv += ["--size", "32", "--steps", "4", "--quiet"]
        done = subprocess.run(
            [str(vizjax_cli), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "b5.png").is_file() and (tmp_path / "site" / "index.html").is_file()

    code = _quick_start("python")
    default = 'vizjax.preset("lucent")'
    assert code.count(default) == 1
    code = code.replace(default, f"{default}.replace(size=(32, 32), steps=4)")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 -- the README's own example
    assert scope["res"].images.shape == (4, 1, 32, 32, 3)
    assert (tmp_path / "b5py.h5").is_file()


@pytest.mark.slow
def test_docs_site_builds_strict_with_the_tutorials_executed(tmp_path):
    site = tmp_path / "site"
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml")]
    done = subprocess.run(
        [*argv, "-d", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-4000:]
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("atlas", "gallery", "exemplars", "--filters", "--recipe", "--plan"):
        assert command in cli  # rendered from the parser at build time
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("visualize", "open_atlas", "run_atlas", "Recipe", "load_weights"):
        assert re.search(rf'id="vizjax\.[\w.]*\b{name}"', api), name  # from its docstring
    for notebook in ("first_atlas", "analysing_atlas"):
        page = (site / "tutorials" / notebook / "index.html").read_text(encoding="utf-8")
        assert "data:image/png;base64" in page, notebook  # executed: its plots are in the page
    assert (site / "bench" / "figures" / "classic_vs_lucent.png").is_file()
    assert (site / "assets" / "readme_figure.png").is_file()


def test_your_own_model_examples_are_the_files_the_tests_run():
    """The "Your own model" blocks of the README and the models page are, verbatim, the files
    that tests/test_generic_atlas.py and tests/test_keras_model_atlas.py run."""
    data = ROOT / "tests" / "data"
    readme = [
        b for _, lang, _, b in _blocks(README.read_text(encoding="utf-8")) if "from_flax" in b
    ]
    assert len(readme) == 1 and readme[0] in (data / "readme_model.py").read_text(encoding="utf-8")
    page = [b for _, lang, _, b in _blocks((PAGES / "models.md").read_text(encoding="utf-8"))]
    for name in ("your_own_model.py", "keras_example.py"):
        assert (data / name).read_text(encoding="utf-8").rstrip("\n") in page, name
