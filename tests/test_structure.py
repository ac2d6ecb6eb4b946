"""The code's shape, as the project promises it: files readable in one sitting, no import cycles, no private
cross-module imports, and tenseal and openfhe imported only inside encryptors/."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("he_leak", "encryptors", "experiments")  # tests may import tenseal: TenSEAL is their reference
MAX_LINES = 420  # "no module over ~400 lines"
MAX_FUNCTION_LINES = 60  # "no function over ~60": a reader holds it in one screen


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) for every import in the file (module level or not)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative import
                base = ".".join(name.split(".")[: -node.level] + [node.module])
            out.append((base, [alias.name for alias in node.names]))
    return out


def test_modules_are_short():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_functions_are_short():
    long = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}:{node.lineno}"] = length
    assert not long, long


def test_no_private_imports_across_modules():
    modules = _modules()
    bad = [(name, target, names) for name, path in modules.items() for target, names in _imports(path, name)
           if target in modules and target != name and any(n.startswith("_") and not n.startswith("__")
                                                          for n in names)]  # fmt: skip
    assert not bad, bad


def test_no_import_cycles():
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(path, name):
            for candidate in [target] + [f"{target}.{n}" for n in names]:
                if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                    graph[name].add(candidate)
    # a package importing its own submodules (registration) is not a cycle; drop package → child edges
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, cycles[:5]


@pytest.mark.parametrize("library", ["tenseal", "openfhe"])
def test_only_encryptors_import_he_libraries(library):
    users = [name for name, path in _modules().items() if not name.startswith("encryptors")
             and any(t.split(".")[0] == library for t, _ in _imports(path, name))]  # fmt: skip
    assert not users, users


# The layers, bottom to top: a module may import its own layer and those below, never one above (encryptors sit
# between the core and the scenarios that use them; the CLI on top may import anything).
LAYERS = (
    ("he_leak.errors", "he_leak.registry", "he_leak.options", "he_leak.validation", "he_leak.config", "he_leak.seeds",
     "he_leak.text", "he_leak.records"),
    ("encryptors", "he_leak.data", "he_leak.models"),
    ("he_leak.scenarios", "he_leak.attacks"),
    ("he_leak.scoring",),
    ("he_leak.runner",),
    ("he_leak.report",),
    ("he_leak.engines", "he_leak.sweep"),
    ("he_leak.bench",),
    ("he_leak.ci",),
    ("he_leak.cli", "he_leak.__main__", "he_leak"),
)


def _layer(module: str) -> int | None:
    best = None
    for rank, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (rank, len(name))
    return None if best is None else best[0]


def test_every_module_has_a_layer():
    missing = [n for n in _modules() if n.split(".")[0] in ("he_leak", "encryptors") and _layer(n) is None]
    assert not missing, missing


def test_no_import_points_up_the_layers():
    upward, modules = [], _modules()
    for name, path in modules.items():
        if name.split(".")[0] not in ("he_leak", "encryptors") or name == "he_leak":
            continue
        here = _layer(name)
        for target, names in _imports(path, name):
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if target == "he_leak" and not submodules and set(names) <= {"__version__"}:
                continue  # the version constant, not the package's API
            for candidate in submodules or [target]:
                there = _layer(candidate)
                if candidate in modules and there is not None and there > here:
                    upward.append(f"{name} (layer {here}) imports {candidate} (layer {there})")
    assert not upward, upward


def test_the_readme_map_names_every_folder_and_only_folders_that_exist():
    """README's "Where things live": one row per package folder of he_leak/ (and the top-level folders)."""
    import re

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Where things live"):]
    section = section[: section.find("\n## ", 5)] if "\n## " in section[5:] else section
    rows = re.findall(r"^\| `([\w/]+)/` \|", section, flags=re.M)
    assert len(rows) == len(set(rows)), f"a folder named twice: {sorted(r for r in rows if rows.count(r) > 1)}"
    assert "\n\n|" not in section[section.index("| folder |"):].rstrip(), "the map's table is split by a blank line"
    named = set(rows)
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "he_leak").rglob("__init__.py")}
    top = {"encryptors", "docs", "experiments", "tests"}
    assert packages | top <= named, sorted(packages | top - named)
    assert all((ROOT / n).is_dir() for n in named), sorted(n for n in named if not (ROOT / n).is_dir())
