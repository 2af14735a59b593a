"""The package's shape: imports only run down the layers (never back up, no cycles), and no module
grows past what a newcomer reads in one sitting. Read from the source with ``ast``, nothing
imported, so a lazy import inside a function counts as much as one at the top."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vizjax"

#: Each module's layer: a module may import its own layer or lower ones, never a higher one.
#: The data's path: cli -> run -> engine.ascent -> engine.render -> recipe parts -> models.vgg;
#: results -> atlas writer -> segments/index -> reader -> analysis.fidelity/gallery/xarray.
#: Modules of the three role packages (engine, models, analysis) are named in full; the atlas,
#: cli and gallery packages by their package name.
LAYERS = {
    0: {"errors", "names", "schema", "durable", "distributed", "probe", "engine", "analysis"},
    1: {
        *(
            "models.conv",
            "models.onednn",
            "engine.optim",
            "engine.transform",
            "images",
            "interrupt",
        ),
    },
    2: {
        *("models.network", "models.vgg", "models.alexnet", "models", "models.keras_weights"),
        *("models.generic", "models.rewrite"),
        *("engine.execution", "engine.objectives", "engine.param"),
    },
    3: {
        *("models.weights", "engine.recipe", "analysis.fidelity", "engine.render", "engine.cost"),
        *("engine.adapter", "models.flax_model", "models.receptive_field"),
        "models.keras_model",
    },
    4: {
        *("engine.chunk", "config", "engine.ascent", "engine.ahead", "atlas", "progress"),
        *("models.loader", "engine.tuning"),
    },
    5: {"run", "analysis.exemplars", "gallery"},
    6: {"article", "plan"},
    7: {"cli", "__main__"},
}
LEVEL = {name: level for level, names in LAYERS.items() for name in names}
#: The role packages and what their modules may import besides their own package (the package
#: docstrings say the same): the networks know nothing of the engine; the engine knows the
#: networks, the measures it writes beside every picture and durable writes (its tuning table),
#: nothing of the atlas or the CLI.
ALLOWED = {
    "models": {"errors", "durable"},
    "engine": {"errors", "images", "models", "analysis.fidelity", "durable"},
}
ROLE_PACKAGES = ("engine", "models", "analysis")
#: Lines a module may have (the issue's "no file over ~700 lines").
MAX_LINES = 700


def _is_module(dotted: str) -> bool:
    path = PACKAGE / dotted.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").exists()


def _modules() -> dict[str, set[str]]:
    """``{module: the vizjax modules it imports}``, e.g. ``"engine.ascent" -> {"engine.render"}``."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(f.with_suffix("").relative_to(PACKAGE).parts)
        name = name.removesuffix(".__init__").removesuffix("__init__") or "__init__"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module != "vizjax" and not node.module.startswith("vizjax."):
                    continue
                base = node.module.removeprefix("vizjax").removeprefix(".")
                for a in node.names:
                    sub = f"{base}.{a.name}" if base else a.name
                    if _is_module(sub):
                        deps.add(sub)
                    elif base:
                        deps.add(base)
            elif isinstance(node, ast.Import):
                deps |= {a.name.removeprefix("vizjax.") for a in node.names if a.name != "vizjax"}
        out[name] = {d for d in deps if _is_module(d)} - {name}
    return out


def _unit(name: str) -> str:
    """The name a module is layered and tested by: role packages' modules in full."""
    top = name.split(".")[0]
    return name if top in ROLE_PACKAGES else top


def test_every_module_has_a_layer():
    missing = {_unit(m) for m in _modules()} - set(LEVEL) - {"__init__"}
    assert not missing, f"give these modules a layer in LAYERS: {sorted(missing)}"


def test_imports_only_run_down_the_layers():
    upward = [
        f"{m} -> {d}"
        for m, deps in _modules().items()
        if m != "__init__"  # the package's lazy re-exports name everything
        for d in deps
        if _unit(d) != _unit(m) and LEVEL[_unit(d)] > LEVEL[_unit(m)]
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
    names = {_unit(m).split(".")[-1] for m in _modules()} - {"__init__", "__main__", *ROLE_PACKAGES}
    names.add("models")  # the registry, vizjax/models/__init__.py
    missing = sorted(n for n in names if not list(tests.glob(f"test_{n}*.py")))
    assert not missing, f"no tests/test_<name>*.py for: {missing}"


def test_role_packages_import_only_what_their_docstrings_allow():
    """models never imports the engine; the engine never imports files, the atlas or the CLI."""
    bad = []
    for m, deps in _modules().items():
        top = m.split(".")[0]
        if top not in ALLOWED:
            continue
        for d in deps:
            if (
                d.split(".")[0] != top
                and d not in ALLOWED[top]
                and d.split(".")[0] not in ALLOWED[top]
            ):
                bad.append(f"{m} -> {d}")
    assert not bad, bad


@pytest.mark.parametrize("package", ROLE_PACKAGES)
def test_each_role_package_says_what_it_holds(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    assert "import" in doc and len(doc) > 80, f"vizjax/{package}/__init__.py needs a docstring"
