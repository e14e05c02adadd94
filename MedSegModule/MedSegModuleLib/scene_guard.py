"""All or nothing: an operation that fails or is cancelled leaves no new node in the scene."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def node_ids(scene: Any) -> set[str]:
    """IDs of every node in ``scene``."""
    return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}


def remove_nodes_added_since(scene: Any, before: set[str]) -> int:
    """Remove nodes whose IDs are not in ``before``, newest first; return how many were removed."""
    added = [scene.GetNthNode(index) for index in range(scene.GetNumberOfNodes())]
    added = [node for node in added if node.GetID() not in before]
    for node in reversed(added):
        if scene.IsNodePresent(node):
            scene.RemoveNode(node)
    return len(added)


@contextlib.contextmanager
def nodes_removed_on_error(scene: Any) -> Iterator[None]:
    """Run the block; on any exception remove the nodes it added, then re-raise."""
    before = node_ids(scene)
    try:
        yield
    except BaseException:
        remove_nodes_added_since(scene, before)
        raise
