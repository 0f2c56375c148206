"""`tunesmith lineage MODEL`: where a model came from, back to the base model."""

from __future__ import annotations

import argparse

from tunesmith.commands.runs import number, print_json, when


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lineage", help="a model's base, datasets, recipe and parent chain",
                                   description="Show a model's lineage: itself, then each parent it was "
                                               "retrained from, with base model, dataset versions and "
                                               "the recipe keys that changed.")
    parser.add_argument("model", help="model name, id (or prefix) or alias name@label")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.tree import Tree

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import diff_recipes, model_view

    registry = open_registry()
    chain = registry.lineage(args.model)
    views = [{**model_view(m, registry.aliases(m.id)), "recipe": m.recipe} for m in chain]
    if args.json:
        print_json(views)
        return 0
    root = Tree(f"[bold]{chain[-1].base_model}[/]" + (f" @ {chain[-1].base_revision}"
                                                      if chain[-1].base_revision else "") + " (base)")
    node = root
    for index in range(len(chain) - 1, -1, -1):
        model, view = chain[index], views[index]
        label = f"[bold]{model.name}[/]  {when(model.created_at)}"
        if view["aliases"]:
            label += f"  [cyan]{', '.join(view['aliases'])}[/]"
        if view["deleted"]:
            label += "  [red](deleted)[/]"
        node = node.add(label)
        for role, dataset_id in view["datasets"].items():
            version = registry.dataset(dataset_id)
            node.add(f"{role} data: {dataset_id} ({version.examples} examples, {version.source_path})")
        loss = model.evaluation.get("best_validation_loss")
        node.add(f"held-out loss {number(loss)}; weights {model.path}")
        parent = chain[index + 1] if index + 1 < len(chain) else None
        changes = diff_recipes(parent.recipe, model.recipe) if parent else []
        shown = [c for c in changes if not c[0].startswith("output.")]
        if parent is not None:
            node.add("recipe changes: " + ("; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in shown) or "none"))
    console.print(root)
    return 0
