"""Data flows one way: a stage imports only stages below it (lazy imports included),
the modules of a stage import each other without cycles, and ``introspect/_accel``
holds only the C module and the binding that loads it.

    vmroc (core) <- deploy <- introspect, inject <- detect <- rca <- service

and inject never reaches detect/rca/service, nor rca/detect into inject. The one reach
upward is the command line gathering every stage's commands (``ALLOWED``); what a lower
stage needs from a higher one is passed in (``bus.bootstrap(start_broker=...)``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEVEL = {"vmroc": 0, "deploy": 1, "introspect": 2, "inject": 2, "detect": 3, "rca": 4,
         "service": 5}
# introspect and inject share a level; inject may read guest memory to aim a fault
# (mem-bitflip finds a process's pages), introspect never needs a fault
FORBIDDEN = {("introspect", "inject"), ("detect", "inject"), ("rca", "inject")}
ALLOWED = {
    ("vmroc/cli.py", "*"),           # the command line gathers every stage's commands
}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "vmroc":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LEVEL else "vmroc"


def imports(path: Path, package: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
    return out


def test_no_stage_imports_a_stage_above_it():
    bad = []
    for folder, level in LEVEL.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            package = "vmroc" if folder == "vmroc" else f"vmroc.{folder}"
            sub = path.relative_to(ROOT / folder).parent.parts
            package = ".".join([package, *sub])
            for name in imports(path, package):
                target = stage_of(name)
                if target is None or target == folder:
                    continue
                if (rel, target) in ALLOWED or (rel, "*") in ALLOWED:
                    continue
                if LEVEL[target] > level or (folder, target) in FORBIDDEN:
                    bad.append(f"{rel} imports {name} ({folder} -> {target})")
    assert not bad, "imports against the stage order:\n" + "\n".join(bad)


# Imports that close a cycle within a stage, with their reasons; the list only shrinks.
CYCLE_EDGES = {
    # the registry imports the built-in kinds on first use; each kind imports `register`
    ("inject/registry.py", "inject/kinds/__init__.py"),
    # rankers -> train (the shipped model's path) -> replay -> rankers (make_ranker)
    ("rca/rankers.py", "rca/train.py"),
    # the blueprints list the shipped campaigns through the app module that registers them
    ("service/blueprints/api.py", "service/app.py"),
    ("service/blueprints/auth.py", "service/app.py"),
    ("service/blueprints/pages.py", "service/app.py"),
}


def module_files() -> dict[str, str]:
    """Dotted module name -> file, relative to the repository."""
    out = {}
    for folder in LEVEL:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT)
            parts = ["vmroc"] + ([] if folder == "vmroc" else [folder]) + list(rel.parts[1:])
            parts[-1] = parts[-1].removesuffix(".py")
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = rel.as_posix()
    return out


def imported_files(rel: str, name: str, files: dict[str, str]) -> set[str]:
    """The repository files ``rel`` (module ``name``) imports, at run time: what only a
    type checker reads (``if TYPE_CHECKING:``) runs no code, so closes no cycle."""
    tree = ast.parse((ROOT / rel).read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    package = name if rel.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {files[a.name] for a in node.names if a.name in files}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:   # `from pkg import mod` imports a module, else pkg
                target = files.get(f"{base}.{a.name}") or files.get(base)
                if target:
                    out.add(target)
    return out - {rel}


def test_no_import_cycles():
    files = module_files()
    imports_of = {rel: imported_files(rel, name, files) for name, rel in files.items()}
    gone = sorted(edge for edge in CYCLE_EDGES if edge[1] not in imports_of[edge[0]])
    assert not gone, f"no longer imported, drop from CYCLE_EDGES: {gone}"
    graph = {rel: {t for t in targets if (rel, t) not in CYCLE_EDGES}
             for rel, targets in imports_of.items()}
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "modules that import each other (directly or around a loop):\n" + \
        "\n".join(" <-> ".join(sorted(c)) for c in cycles)
    assert "inject/runner.py" not in graph["inject/lease.py"]   # the cycle that was here


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of ``graph`` (node -> successors)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            out.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_accel_holds_only_the_c_module_and_its_binding():
    """What is built on the C module (``AccelKernel``) is an introspect reader like the
    others (``introspect/backends.py``), not part of the native package."""
    folder = ROOT / "introspect" / "_accel"
    files = {p.name for p in folder.iterdir() if p.is_file()
             and not (p.name.startswith("_vmread.") and p.suffix == ".so")}  # the build
    assert files == {"__init__.py", "vmread.c"}
    binding = ast.parse((folder / "__init__.py").read_text())
    defined = {n.name for n in binding.body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
    assert defined == {"available"}, "the binding loads _vmread and says whether it is built"
