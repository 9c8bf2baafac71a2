"""Reading study files and instruments within limits: size, nesting depth and aliases.

PyYAML's safe loader builds only plain data, but a small document can still describe a huge
one: nine levels of ten aliases each (``&a [x, x, ...]``, ``&b [*a, *a, ...]``, ...) are a
"billion laughs" that costs nothing to parse and gigabytes as soon as anything walks it
(schema errors quote it, hashing serializes it). So, before anything is built from it:

- the file may be at most :data:`MAX_BYTES` long (checked before it is read);
- collections may nest at most :data:`MAX_DEPTH` deep;
- aliases (``*name``) may be used at most :data:`MAX_ALIASES` times, and the document with its
  aliases expanded may hold at most :data:`MAX_NODES` values. The shipped instruments use a
  few aliases for shared answer options, so aliases are capped rather than forbidden.

The check walks the node graph that libyaml composed (the C parser, so loading stays fast) and
stops as soon as a limit is passed: a bomb is refused after a few hundred thousand steps at
most, in little memory. The error names the limit; callers add the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 32
MAX_ALIASES = 100
MAX_NODES = 200_000

# libyaml's parser when PyYAML has it (about ten times faster, the same safe constructor).
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLimitError(ValueError):
    """A YAML document over one of the limits; the message names the limit."""


def read_text(path: Path, what: str = "file", max_bytes: int = MAX_BYTES) -> str:
    """The file's text, refused before reading when it is larger than `max_bytes`."""
    too_big = f"the {what} is larger than the limit of {_size(max_bytes)}"
    if path.stat().st_size > max_bytes:
        raise YamlLimitError(too_big)
    with path.open("rb") as f:  # the file may grow between stat and read
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YamlLimitError(too_big)
    return data.decode("utf-8")


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n} bytes"


def check_node(root: Node, *, max_depth: int = MAX_DEPTH, max_aliases: int = MAX_ALIASES,
               max_nodes: int = MAX_NODES) -> None:
    """Refuse a composed document that nests too deep, uses too many aliases or expands to
    too many values. Walks the document as if aliases were copied, so it is bounded by
    `max_nodes` steps whatever the document (a recursive alias hits the depth limit)."""
    seen: set[int] = set()
    aliases = nodes = 0
    # (node, depth, inside a copy): a node met again is an alias; what lies inside the copy
    # counts towards the values and the depth, not as further aliases
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, copied = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise YamlLimitError(f"with its aliases expanded the document holds more than "
                                 f"{max_nodes:,} values (the limit; an alias bomb?)")
        if not copied:
            if id(node) in seen:
                copied = True
                aliases += 1
                if aliases > max_aliases:
                    raise YamlLimitError(f"aliases (*name) are used more than {max_aliases} "
                                         "times (the limit)")
            else:
                seen.add(id(node))
        kind = type(node)
        if kind is SequenceNode or kind is MappingNode:
            if depth > max_depth:
                mark = node.start_mark
                raise YamlLimitError(f"line {mark.line + 1}: the document nests deeper than "
                                     f"{max_depth} levels (the limit)")
            if kind is SequenceNode:
                stack.extend((child, depth + 1, copied) for child in node.value)
            else:
                for key, value in node.value:
                    stack.append((key, depth + 1, copied))
                    stack.append((value, depth + 1, copied))


class LimitedSafeLoader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, checking :func:`check_node` between composing and constructing."""

    def get_single_data(self) -> Any:
        try:
            node = self.get_single_node()
        except RecursionError:  # only the pure-Python composer recurses per level
            raise YamlLimitError(f"the document nests deeper than {MAX_DEPTH} levels "
                                 "(the limit)") from None
        if node is None:
            return None
        check_node(node)
        return self.construct_document(node)


def load(text: str, loader: type[yaml.SafeLoader] = LimitedSafeLoader) -> Any:
    """Parse YAML text within the limits (`loader` must derive from LimitedSafeLoader)."""
    if not issubclass(loader, LimitedSafeLoader):
        raise TypeError("the loader must check the limits (derive from LimitedSafeLoader)")
    return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
