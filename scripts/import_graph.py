"""Print the import cycles and upward imports of src/tunesmith.

Every import counts, module level or lazy inside a function (a lazy import hides a cycle from
Python but not from a reader), except those under ``if TYPE_CHECKING:``, which never run.
The layers are declared once, in LAYERS below; docs/ARCHITECTURE.md describes them, and
tests/unit/test_import_layers.py fails on any cycle or upward edge this prints.

    python scripts/import_graph.py            # cycles and upward edges; exit 1 if any
    python scripts/import_graph.py --edges    # every internal edge, for reading
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "tunesmith"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# Lowest first. A module may import its own layer or any layer below it, never one above.
# A module belongs to the layer of the longest prefix listed here that matches its dotted name,
# so a package can sit in one layer and a few of its modules in another (the reason is given).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("errors", "fsutil", "hardware", "allocator", "assets")),
    # The recipe, and the plain-data tables it checks names against when it is read: built-in
    # chat templates and grader kinds (graders are shared by evaluation and GRPO).
    ("recipe", ("recipe", "data.templates", "evaluate.graders", "evaluate.similarity",
                "evaluate.sandbox")),
    ("data", ("data",)),
    # The run folder's format (recipe.yaml, run.json, metrics, COMPLETE-marked checkpoints):
    # written by training, read by inference, evaluation, the registry and export.
    ("run folder", ("train.run", "train.checkpoint")),
    # The registry's database (schema, sessions, named base models, datasets, job liveness):
    # model loading resolves registered base-model names through it.
    ("registry", ("store.home", "store.errors", "store.engine", "store.schema", "store.registry",
                  "store.base_models", "store.migrate", "store.migrations", "store.datasets",
                  "store.liveness", "store.artifacts")),
    ("model", ("model",)),
    ("train", ("train",)),
    # The dataset check renders with the model's tokenizer and reports the epochs training would
    # choose (train/auto.py), so it sits above both.
    ("data check", ("data.check",)),
    ("evaluate", ("evaluate",)),
    # The loop drives everything below it: held-out evaluation during training, the evaluation
    # suite after it.
    ("loop", ("train.loop",)),
    ("store", ("store",)),
    # Deciding and iterating before and between runs: advice, sweeps of registered runs, data fixes.
    ("iterate", ("iterate",)),
    # Shipping a trained model: resolve it by path, registry name or alias; export it; pull bases.
    ("ship", ("model.targets", "model.export", "model.pull")),
    ("top", ("serve", "commands", "cli", "__main__", "__init__")),
)


def module_name(path: Path) -> str:
    """The dotted name of a file below the package root, without the package prefix."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Internal modules imported anywhere in the tree (TYPE_CHECKING blocks excepted)."""
    found: set[str] = set()
    package = name.split(".") if is_package else name.split(".")[:-1]
    if name == "__init__":
        package = []

    def resolve(target: str) -> str | None:
        # The longest known module that the dotted target names (a.b.c -> a.b if c is a name).
        parts = target.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in known:
                return candidate
            parts.pop()
        return None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        hit = resolve(alias.name[len(PACKAGE) + 1 :])
                        if hit:
                            found.add(hit)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)] if child.level > 1 else package
                    prefix = ".".join([*base, child.module] if child.module else base)
                elif child.module and (child.module == PACKAGE or child.module.startswith(PACKAGE + ".")):
                    prefix = child.module[len(PACKAGE) + 1 :]
                else:
                    continue
                for alias in child.names:
                    target = f"{prefix}.{alias.name}" if prefix else alias.name
                    hit = resolve(target) or (resolve(prefix) if prefix else None)
                    if hit:
                        found.add(hit)
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> internal modules it imports."""
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges[name] = _imported(tree, name, path.name == "__init__.py", known)
    return edges


def layer_of(name: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or name.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise KeyError(f"{PACKAGE}.{name} is in no layer: add it to LAYERS in scripts/import_graph.py")
    return best[1]


def upward_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    out = []
    for source, targets in edges.items():
        for target in targets:
            if layer_of(target) > layer_of(source):
                out.append((source, target))
    return sorted(out)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            connect(node)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every internal edge")
    args = parser.parse_args(argv)
    edges = graph()
    if args.edges:
        for source in sorted(edges):
            for target in sorted(edges[source]):
                print(f"{source} -> {target}")
        return 0
    found = cycles(edges)
    up = upward_edges(edges)
    names = [name for name, _ in LAYERS]
    print("layers (low -> high): " + " < ".join(names))
    print(f"cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    print(f"upward imports: {len(up)}")
    for source, target in up:
        print(f"  {source} [{names[layer_of(source)]}] -> {target} [{names[layer_of(target)]}]")
    return 1 if found or up else 0


if __name__ == "__main__":
    sys.exit(main())
