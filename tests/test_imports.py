"""Dependencies point one way: every import of production code, lazy ones inside functions too, goes to its
own layer or a lower one; no module imports `tests`; the module graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIBRARY = (
    "bleu",
    "references",
    "encoders",
    "metrics",
    "protocols",
    "sense",
    "scoring",
    "api",
    "predictions",
    "significance",
)
# Lowest first; a module is in the layer of its longest matching prefix.
LAYERS: dict[str, tuple[str, ...]] = {
    "ground": ("run_config",),
    "data": ("dataset",),
    "prompts": ("prompts",),
    "metric library": tuple(f"evaluation.{m}" for m in LIBRARY),
    "clustering": ("clustering",),
    "training": ("training",),
    "inference": ("inference",),
    "evaluate stage": ("evaluation",),  # evaluation.config, evaluate, report
    # inference/main.py and training/finetune.py: the original repo's entry files, run by path, never imported
    "top": ("scripts", "main", "inference.main", "training.finetune"),
}


def layer(module: str) -> tuple[int, str]:
    hits = [(len(p), i, n) for i, (n, ps) in enumerate(LAYERS.items()) for p in ps if f"{module}.".startswith(f"{p}.")]
    assert hits, f"{module} is in no layer: add it to LAYERS in tests/test_imports.py"
    return max(hits)[1:]


def import_edges() -> set[tuple[str, str, str]]:
    """(importer, imported module or `tests`, file:line) for every import of a repo module in production code."""
    files = [*REPO.glob("*.py"), *(f for d in REPO.iterdir() if (d / "__init__.py").is_file() for f in d.rglob("*.py"))]
    trees = {".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): f for f in files}
    trees = {m: f for m, f in trees.items() if m.split(".")[0] != "tests"}
    edges = set()
    for module, path in trees.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}:{node.lineno}: relative import; use the absolute name"
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                while name not in trees and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in trees or name == "tests":
                    edges.add((module, name, f"{path.relative_to(REPO)}:{node.lineno}"))
    return edges


def test_imports_point_down_and_never_into_tests() -> None:
    edges = import_edges()
    assert ("training.moe.merge", "clustering.assign") in {e[:2] for e in edges}  # a lazy import is seen
    for src, dst, where in sorted(edges):
        assert dst != "tests", f"{where}: {src} imports tests"
        (low, low_name), (high, high_name) = layer(src), layer(dst)
        assert high <= low, f"{where}: {src} ({low_name}) imports {dst} ({high_name}, a higher layer)"


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst, _ in import_edges():
        graph.setdefault(src, set()).add(dst)
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(module, ())):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done and (found := cycle_from(nxt, [*path, nxt])):
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = cycle_from(module, [module])
        assert found is None, "import cycle: " + " -> ".join(found)
