"""The package's import graph has no cycle and no upward edge (layers: scripts/import_graph.py)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("import_graph", None)


def test_no_import_cycle(graph_module) -> None:
    assert graph_module.cycles(graph_module.graph()) == []


def test_no_upward_import(graph_module) -> None:
    assert graph_module.upward_edges(graph_module.graph()) == []


def test_every_module_has_a_layer(graph_module) -> None:
    for name in graph_module.modules():
        graph_module.layer_of(name)  # KeyError names a module no layer claims


def test_the_check_sees_lazy_imports_and_skips_type_checking(graph_module) -> None:
    source = ("from typing import TYPE_CHECKING\n"
              "from tunesmith.errors import TunesmithError\n"
              "if TYPE_CHECKING:\n    from tunesmith.store import registry\n"
              "def later():\n    from tunesmith.serve.app import create_app\n"
              "    from . import loss\n")
    known = {"errors", "store", "store.registry", "serve.app", "train.loss", "train.loop"}
    found = graph_module._imported(ast.parse(source), "train.loop", False, known)
    assert found == {"errors", "serve.app", "train.loss"}


def test_the_check_finds_a_cycle_and_an_upward_edge(graph_module) -> None:
    edges = {"model.loading": {"train.loop"}, "train.loop": {"model.loading"}, "data.render": set()}
    assert graph_module.cycles(edges) == [["model.loading", "train.loop"]]
    assert graph_module.upward_edges(edges) == [("model.loading", "train.loop")]
