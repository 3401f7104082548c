"""YAML for config files, within bounds: nesting depth, nodes after alias expansion, numbers.

PyYAML's SafeLoader is safe from code execution but not from exhaustion: 5,000 nested lists
exhaust the recursion limit, a 350-byte "billion laughs" of aliases expands (in whatever walks
the result) to billions of nodes, and a 10,000-digit integer makes ``int()`` raise ValueError.
:func:`read_yaml` bounds each and reports every problem as a :class:`yaml.MarkedYAMLError`
with the line it is on, so the caller prints ``FILE:LINE: problem`` and nothing else.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent

__all__ = ["MAX_DEPTH", "MAX_NODES", "read_yaml"]

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings; the service's own config is at most 6 deep."""

MAX_NODES = 200_000
"""Most nodes a document may stand for once every alias is expanded (a config with 10,000
static targets has about 60,000)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts depth and expanded nodes while composing, before any walk."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # nodes composed so far, each alias counted as its whole subtree
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size of its subtree

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        mark: yaml.Mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(AliasEvent):
            alias = super().compose_node(parent, index)
            size = self._sizes.get(id(alias))
            if size is None:  # its node is still being composed: the alias is inside it
                raise ComposerError(
                    None, None, "an alias inside the value it names (a cycle)", mark
                )
            self._count(size, mark)
            return alias
        if self._depth >= MAX_DEPTH:
            raise ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels; a config is a few", mark
            )
        self._depth += 1
        before = self._expanded
        self._count(1, mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._expanded - before
        return node

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self._expanded += nodes
        if self._expanded > MAX_NODES:
            raise ComposerError(
                None,
                None,
                f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?)",
                mark,
            )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Any error building a value (a 10,000-digit integer, 2024-02-30) names its line."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as err:
            raise ConstructorError(
                None, None, f"cannot read this value: {_short(err)}", node.start_mark
            ) from None


def _short(err: Exception) -> str:
    text = str(err)
    if "integer string conversion" in text:  # int() past sys.get_int_max_str_digits()
        return "a number with thousands of digits"
    return text if len(text) <= 200 else f"{text[:200]}..."


def read_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """The document in ``text`` and its root node (for line numbers); (None, None) if empty.

    Raises :class:`yaml.YAMLError` (with ``problem_mark`` where the problem is) for invalid
    YAML and for documents past :data:`MAX_DEPTH` or :data:`MAX_NODES`.
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        return loader.construct_document(node), node
    finally:
        loader.dispose()
