"""The package reads top-down: CLI -> ROS adapters -> runner -> cache (+ strategies, gate) -> model.

No module imports one from a layer above its own (type-only imports included), so each layer can be
read, tested and replaced without the ones above it.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kv_efficient_vla_ros"

# lowest first; a module may import from its own layer and the ones below
LAYERS = [
    ("core.options", "core.synthetic"),
    ("core.openvla",),
    ("core.cache", "core.policy"),
    ("core.runner",),
    ("core.benchmarks", "core.training", "core.evaluation", "core.sim"),
    ("ros", "msg"),
    ("cli",),
]


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _imports(path: Path) -> list[str]:
    """Modules ``path`` imports from this package, relative to it (``core.cache.gate``)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = parts[: len(parts) - node.level]
            target = [*base, *(node.module.split(".") if node.module else [])]
            names = [".".join([*target, a.name]) for a in node.names] if not node.module else [".".join(target)]
            found += names
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kv_efficient_vla_ros."):
            found.append(node.module.removeprefix("kv_efficient_vla_ros."))
    return found


def test_no_import_climbs_back_up():
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = _layer(module)
        if own is None:
            continue
        for imported in _imports(path):
            target = _layer(imported)
            assert target is None or target <= own, f"{module} imports {imported} from a layer above it"
            checked += 1
    assert checked > 50
