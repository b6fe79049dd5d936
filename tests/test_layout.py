"""The README's "Layout" is the real import graph: every import inside centrobind (module-level,
lazy or for type checking) goes down a floor, never up or sideways."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "centrobind"

#: The README's floors, one number per top-level module or package (1: the foundations, which
#: may import each other in this sub-order).
FLOORS = {
    "errors": 0,
    "logbar": 0.5,
    "espeak": 1,
    "distributed": 1,
    "diskfull": 1,
    "memory": 1,
    "runlock": 1,
    "search": 1,
    "checkpoint": 2,
    "runfolder": 2,
    "digests": 2.2,
    "data": 3,
    "featurize": 2.5,
    "models": 4,
    "objectives": 4,
    "towers": 3.5,
    "eval": 5,
    "config": 5,
    "train": 6,
    "pipeline": 7,
    "rawruns": 7.5,
    "runs": 8,
    "saved_index": 8.5,
    "inference": 9,
    "bench": 10,
    "demo": 10,
    "examples": 10,
    "export": 10,
    "serve": 10,
    "cli": 11,
}


def _unit(module: str) -> str:
    """``centrobind.x.y`` -> ``x``; ``centrobind`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """The centrobind modules that ``path`` imports, relative imports resolved."""
    package = list(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [] if node.module else [f"{target}.{a.name}" for a in node.names]
                found.update(names or [target])
            else:
                found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "centrobind" or m.startswith("centrobind.")}


def test_every_import_goes_down_a_floor():
    units = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    units |= {p.stem for p in SRC.glob("*.py") if not p.name.startswith("_")}
    assert units == set(FLOORS), f"give each module a floor: {sorted(units ^ set(FLOORS))}"
    upward = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        here = rel.parts[0].removesuffix(".py")
        if here == "__init__":  # the package's lazy `centrobind.load` / `Index` entry points
            continue
        for target in _imports(path):
            there = _unit(target)
            if there in ("", "__version__", here):  # the version string; itself
                continue
            if FLOORS[there] >= FLOORS[here]:
                upward.append(f"{rel} imports {target}")
    assert not upward, upward
