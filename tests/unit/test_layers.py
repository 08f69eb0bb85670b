"""The tree shows the architecture: client (sdk, cli) -> drivers (kube, local) -> engine -> api.
No module imports a layer above its own, the two drivers never import each other, no import
cycle exists, and the trainer library never imports the operator. docs/architecture.md draws it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "trainyard"
TRAINER = ROOT / "trainer-image" / "trainyard_trainer"
LAYERS = {"api": 0, "engine": 1, "kube": 2, "local": 2, "sdk": 3, "cli": 4}


def module_name(path: Path, root: Path, top: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([top, *parts])


def imports(path: Path, name: str, modules: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Modules that `path` imports, wherever in the file, except under TYPE_CHECKING. `from pkg
    import mod` depends on pkg.mod only (when it is one of `modules`), not on pkg's other contents."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            out.update(subs)
            if not subs <= modules:
                out.add(base)
    return out


def graph(root: Path, top: str) -> dict[str, set[str]]:
    mods = {module_name(p, root, top): p for p in root.rglob("*.py")}
    return {m: {i for i in imports(p, m, set(mods)) if i in mods and i != m} for m, p in mods.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


GRAPH = graph(PACKAGE, "trainyard")


def test_every_module_is_in_a_layer():
    assert sorted(m for m in GRAPH if layer(m) is None) == ["trainyard"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    mine = layer(module)
    if mine is None:
        return
    bad = [i for i in GRAPH[module] if (theirs := layer(i)) and theirs != mine
           and (LAYERS[theirs] >= LAYERS[mine])]
    assert bad == [], f"{module} imports {bad}: a layer at or above its own ({mine})"


def test_no_import_cycles():
    # Tarjan's strongly connected components: any component with more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_trainer_library_never_imports_the_operator():
    offenders = {p.name for p in TRAINER.rglob("*.py")
                 if any(i == "trainyard" or i.startswith("trainyard.") for i in imports(p, "trainyard_trainer.x"))}
    assert offenders == set()


def test_the_engine_and_the_api_do_no_io():
    """The pure layers import neither a Kubernetes client, kopf, processes nor sockets."""
    forbidden = ("kubernetes", "kopf", "subprocess", "socket", "psutil", "urllib3", "asyncio")
    for module, path in ((m, PACKAGE.joinpath(*m.split(".")[1:])) for m in GRAPH if layer(m) in ("api", "engine")):
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        found = [i for i in imports(path, module) if i.split(".")[0] in forbidden]
        assert found == [], f"{module} imports {found}"
