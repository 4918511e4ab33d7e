"""The layering the code promises (docs/architecture.md, src/agent/README.md), read from the
sources' #include lines: src/agent has no include cycle, the manager names none of the parts it
reaches through ManagerPart and ManagerCoordination, and bus/ has no cycle either. No server is
needed; this runs in the integration suite because it reads the tree, not a build."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
INCLUDE = re.compile(r'^#include "(?:(agent|bus)/)?([\w-]+)\.h"', re.M)


# Headers that belong to another file's module: agent-internal.h is the manager's own.
SAME_MODULE = {"agent-internal": "agent-manager"}


def module_graph(directory: str) -> dict[str, set[str]]:
    """Module (file stem) -> the modules of the same directory whose headers it includes."""
    d = SRC / directory
    stems = {SAME_MODULE.get(p.stem, p.stem) for p in d.glob("*.[ch]")}
    graph: dict[str, set[str]] = {s: set() for s in stems}
    for path in d.glob("*.[ch]"):
        me = SAME_MODULE.get(path.stem, path.stem)
        for prefix, stem in INCLUDE.findall(path.read_text()):
            stem = SAME_MODULE.get(stem, stem)
            if prefix not in ("", directory) or stem not in stems or stem == me:
                continue
            graph[me].add(stem)
    return graph


def cycles(graph: dict[str, set[str]], skip: set[str]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if m in skip:
                continue
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state and n not in skip:
            visit(n)
    return found


def test_agent_has_no_include_cycle():
    graph = module_graph("agent")
    # agent-parts.c is the composition root: it includes every part, nothing includes it.
    assert not any("agent-parts" in deps for deps in graph.values())
    assert cycles(graph, skip={"agent-parts"}) == []


@pytest.mark.parametrize("part", ["agent-reader", "agent-remover", "agent-resync",
                                  "agent-cluster"])
def test_the_manager_names_no_part(part):
    graph = module_graph("agent")
    assert part not in graph["agent-manager"], f"the manager includes {part}.h"
    # Nor calls one of its functions by name (they are reached through the tables).
    text = (SRC / "agent" / "agent-manager.c").read_text()
    prefix = {"agent-reader": "reader_", "agent-remover": "remover_",
              "agent-resync": "resync_", "agent-cluster": "cluster_"}[part]
    called = set(re.findall(r"(?<![\w>.])(" + prefix + r"\w+)\(", text))
    called |= set(re.findall(r"(?<![\w>.])(manager_cluster_\w+)\(", text)) if part == "agent-cluster" else set()
    assert called == set(), called


def test_bus_has_no_call_back_into_bus_manager():
    text = (SRC / "bus" / "bus-manager.c").read_text()
    defined = set(re.findall(r"^[A-Za-z][\w *]*?\b(bus_\w+)\(", text, re.M))
    others = [p for p in (SRC / "bus").glob("*.c") if p.name != "bus-manager.c"]
    for p in others:
        used = set(re.findall(r"\b(bus_\w+)\(", p.read_text())) & defined
        assert used == set(), f"{p.name} calls back into bus-manager.c: {used}"
    assert cycles(module_graph("bus"), skip=set()) == []
