"""Strongly connected components of a directed graph: where redirects go round in circles.

One iterative Tarjan for the static redirect graph, linking's matching and the pictures.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def strongly_connected(successors: Mapping[T, Sequence[T]]) -> list[list[T]]:
    """Every strongly connected component of the graph (a node's successors that are not
    keys of ``successors`` are ignored), each a list of nodes, in Tarjan's order."""
    index: dict[T, int] = {}
    low: dict[T, int] = {}
    stack: list[T] = []
    on_stack: set[T] = set()
    components: list[list[T]] = []
    for root in successors:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            out = successors[node]
            while i < len(out) and out[i] not in successors:
                i += 1
            if i < len(out):
                work.append((node, i + 1))
                child = out[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def cycles(successors: Mapping[T, Sequence[T]]) -> list[list[T]]:
    """The components a path can go round: two or more nodes, or a node that points to
    itself."""
    return [
        component
        for component in strongly_connected(successors)
        if len(component) > 1 or component[0] in successors[component[0]]
    ]
