"""Data flows one way: a stage imports only stages below it (lazy imports included).

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
