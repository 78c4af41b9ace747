"""The layers of ARCHITECTURE.md hold: no module of ``retinakit/`` imports from a layer above its
own (imports inside functions included), and no import cycle inside ``io/``."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "retinakit"


@dataclass(frozen=True)
class Import:
    """One import statement of a module: the module it reaches, and where."""

    target: str
    line: int
    text: str


def read_layers(doc: Path = ROOT / "ARCHITECTURE.md") -> list[tuple[str, list[str]]]:
    """The layer table of ARCHITECTURE.md, bottom layer first: ``(layer, [entry, ...])``."""
    layers = []
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            layers.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    assert layers, f"no layer table found in {doc}"
    return layers


def package_modules(root: Path = ROOT / PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str:
    """The longest prefix of ``name`` that is a module of the package."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, source: str, is_pkg: bool, modules: dict[str, tuple[Path, bool]]) -> list[Import]:
    """The package modules that ``source`` (the text of ``module``) imports, anywhere in the file.

    ``from X import name`` reaches ``X.name`` when that is a module, else ``X``; relative imports
    are resolved against the module's package.
    """
    found = []
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target.split(".")[0] == PACKAGE and _known(target, modules) != module:
                found.append(Import(_known(target, modules), node.lineno, lines[node.lineno - 1].strip()))
    return found


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """Index of the layer that holds ``module`` (the longest matching entry), ``None`` when none does."""
    best: tuple[int, int] | None = None
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            name = PACKAGE if entry == "__init__" else f"{PACKAGE}.{entry.rstrip('/').replace('/', '.')}"
            if module == name or (entry.endswith("/") and module.startswith(name + ".")):
                if best is None or len(name) > best[0]:
                    best = (len(name), index)
    return None if best is None else best[1]


def layer_violations(modules: dict[str, tuple[Path, bool]], layers: list[tuple[str, list[str]]]) -> list[str]:
    """One line per import that reaches a layer above the importing module's own."""
    bad = []
    for module, (path, is_pkg) in modules.items():
        own = layer_of(module, layers)
        for imp in imports_of(module, path.read_text(), is_pkg, modules):
            other = layer_of(imp.target, layers)
            if own is not None and other is not None and other > own:
                bad.append(f"{path.relative_to(ROOT)}:{imp.line} `{imp.text}`: {module} (layer {layers[own][0]}) imports "
                           f"{imp.target} (layer {layers[other][0]}, above it)")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_is_in_exactly_one_listed_layer() -> None:
    layers, modules = read_layers(), package_modules()
    missing = [m for m in modules if layer_of(m, layers) is None]
    assert not missing, f"modules with no layer in ARCHITECTURE.md: {missing}; add them to the layer table"
    entries = [e for _, es in layers for e in es]
    assert len(entries) == len(set(entries)), f"an entry is listed twice in ARCHITECTURE.md: {entries}"
    stale = [e for e in entries if not any(layer_of(m, [("", [e])]) is not None for m in modules)]
    assert not stale, f"ARCHITECTURE.md lists modules that do not exist: {stale}"


def test_no_module_imports_from_a_layer_above() -> None:
    bad = layer_violations(package_modules(), read_layers())
    assert not bad, "imports against the layer order of ARCHITECTURE.md:\n" + "\n".join(bad)


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    modules = {name: (Path(), name == "retinakit.fitting") for name in ("retinakit.fitting", "retinakit.fitting.x", "retinakit.pipeline",
                                                                          "retinakit.pipeline.runs", "retinakit.errors")}
    source = "from ..errors import DataError\n\ndef f():\n    from ..pipeline import runs\n    import retinakit.pipeline\n"
    found = imports_of("retinakit.fitting.x", source, False, modules)
    assert [(i.target, i.line) for i in found] == [("retinakit.errors", 1), ("retinakit.pipeline.runs", 4), ("retinakit.pipeline", 5)]
    layers = [("core", ["errors"]), ("fitting", ["fitting/"]), ("pipeline", ["pipeline/"])]
    assert [layer_of(i.target, layers) for i in found] == [0, 2, 2]


def test_no_import_cycle_inside_io() -> None:
    modules = package_modules()
    io = {m: v for m, v in modules.items() if m == f"{PACKAGE}.io" or m.startswith(f"{PACKAGE}.io.")}
    graph = {m: {i.target for i in imports_of(m, path.read_text(), is_pkg, modules) if i.target in io} for m, (path, is_pkg) in io.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle inside io/: " + " -> ".join(cycle or [])


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None
