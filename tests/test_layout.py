"""The package's shape: imports only run down the layers (never back up, no cycles), and no module
grows past what a newcomer reads in one sitting. Read from the source with ``ast``, nothing
imported, so a lazy import inside a function counts as much as one at the top."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vizjax"

#: Each module's layer: a module may import its own layer or lower ones, never a higher one.
#: The data's path: cli -> run -> ascent -> render -> recipe parts -> vgg; results -> atlas
#: writer -> segments/index -> reader -> fidelity/gallery/xarray.
LAYERS = {
    0: {"errors", "schema", "durable", "conv", "optim", "transform", "distributed", "probe"},
    1: {
        *("images", "network", "vgg", "alexnet", "models", "execution", "objectives"),
        *("param", "keras", "interrupt"),
    },
    2: {"weights", "recipe", "fidelity", "render", "cost", "chunk"},
    3: {"config", "ascent", "ahead", "atlas", "progress"},
    4: {"run", "exemplars", "gallery"},
    5: {"article", "plan"},
    6: {"cli", "__main__"},
}
LEVEL = {name: level for level, names in LAYERS.items() for name in names}
#: Lines a module may have (the issue's "no file over ~700 lines").
MAX_LINES = 700


def _modules() -> dict[str, set[str]]:
    """``{module: the vizjax modules it imports}``, e.g. ``"atlas.writer" -> {"atlas.index"}``."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(f.with_suffix("").relative_to(PACKAGE).parts)
        name = name.removesuffix(".__init__").removesuffix("__init__") or "__init__"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "vizjax":
                    deps |= {a.name for a in node.names if a.name != "__version__"}
                elif node.module.startswith("vizjax."):
                    deps.add(node.module.removeprefix("vizjax."))
            elif isinstance(node, ast.Import):
                deps |= {a.name.removeprefix("vizjax.") for a in node.names if a.name != "vizjax"}
        out[name] = {
            d
            for d in deps
            if (PACKAGE / d.replace(".", "/")).exists()
            or (PACKAGE / (d.replace(".", "/") + ".py")).exists()
        } - {name}
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def test_every_module_has_a_layer():
    missing = {_top(m) for m in _modules()} - set(LEVEL) - {"__init__"}
    assert not missing, f"give these modules a layer in LAYERS: {sorted(missing)}"


def test_imports_only_run_down_the_layers():
    upward = [
        f"{m} -> {d}"
        for m, deps in _modules().items()
        if m != "__init__"  # the package's lazy re-exports name everything
        for d in deps
        if _top(d) != _top(m) and LEVEL[_top(d)] > LEVEL[_top(m)]
    ]
    assert not upward, upward


def test_no_import_cycles():
    graph = _modules()
    graph.pop("__init__", None)
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            pytest.fail(f"import cycle: {' -> '.join(path[path.index(m) :] + [m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("folder", ["vizjax", "bench", "scripts", "tests"])
def test_no_module_is_too_long_to_read(folder):
    long = {
        str(f.relative_to(ROOT)): n
        for f in (ROOT / folder).rglob("*.py")
        if not any(p.startswith(".venv") for p in f.parts)
        and (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_every_module_has_a_test_file():
    """A newcomer finds a module's tests by its name: tests/test_<module>*.py (a package's name
    for the modules inside it)."""
    tests = ROOT / "tests"
    names = {_top(m) for m in _modules()} - {"__init__", "__main__"}
    missing = sorted(n for n in names if not list(tests.glob(f"test_{n}*.py")))
    assert not missing, f"no tests/test_<name>*.py for: {missing}"
