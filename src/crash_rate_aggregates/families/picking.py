"""Picking a small ping's fields in compiled code.

A family names the places it reads (paths of keys). From them this module makes msgspec
`Struct` types holding exactly those keys, so that decoding a line turns only those places into
Python objects and skips everything else in C: for a 1.3 KB Glean ping, 2 µs where walking
simdjson's document from Python takes 10 µs and `json.loads` 13 µs (docs/performance.md).

The picked values come out flat, one per place, at the place's index (`index`): the values
where a key is present (JSON null is None), `MISSING` where it is missing or a step on the way
is not an object. A place that has places below it (an object the rules also look at) holds a
value whose type is in `object_types` when it is an object.

msgspec neither validates what it skips nor keeps the first of a repeated key, so a caller
validates the whole line first (simdjson) and reads a repeated key's last value (as `json.loads`
and orjson do, and as `fields_of_dict` does for the lines `pick` cannot type).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Union

import msgspec

Path = tuple[str, ...]
#: A key that is not there (JSON null is None, a present value).
MISSING: Any = msgspec.UNSET
Node = tuple[int, "dict[str, Node] | None"]  # (index of the place, children or None: a leaf)
Fields = tuple[Any, ...]
#: One node's flattening: for each child that is an object, (its slot among the node's values,
#: its Struct type, its own plan, the values of its subtree when it is not an object).
_Plan = tuple[tuple[int, type, "_Plan", Fields], ...]


def _key_tree(paths: Iterable[Path]) -> dict[str, Any]:
    """The paths as nested dicts of keys (None for a leaf), keys in order of first mention."""
    tree: dict[str, Any] = {}
    for path in paths:
        children = tree
        for depth, key in enumerate(path):
            if depth == len(path) - 1:
                children.setdefault(key, None)
            else:
                below = children.get(key)
                if below is None:
                    below = children[key] = {}
                children = below
    return tree


def _layout(keys: dict[str, Any], start: int) -> tuple[dict[str, Node], int]:
    """Indexes in flattening order: a node's own keys, then each child object's subtree."""
    tree: dict[str, Node] = {}
    slots = {key: start + slot for slot, key in enumerate(keys)}
    end = start + len(keys)
    for key, below in keys.items():
        children = None
        if below is not None:
            children, end = _layout(below, end)
        tree[key] = (slots[key], children)
    return tree, end


def _struct(tree: dict[str, Node], types: list[type]) -> tuple[type, _Plan, int]:
    """The Struct type of one node, its flattening plan, and its subtree's size."""
    fields: list[tuple[str, Any, Any]] = []
    plan: list[tuple[int, type, _Plan, Fields]] = []
    size = len(tree)
    for slot, (key, (index, children)) in enumerate(tree.items()):
        kind: Any = Any
        if children is not None:
            child, child_plan, child_size = _struct(children, types)
            plan.append((slot, child, child_plan, (MISSING,) * child_size))
            size += child_size
            kind = Union[child, None, msgspec.UnsetType]  # noqa: UP007 (a runtime type)
        fields.append((f"f{index}", kind, msgspec.field(default=MISSING, name=key)))
    struct = msgspec.defstruct(f"Place{len(types)}", fields, gc=False)
    types.append(struct)
    return struct, tuple(plan), size


def _flattener(plan: _Plan) -> Callable[[Any], Fields]:
    """A function of the top Struct giving the values in index order. It is generated as
    straight-line code (as `dataclasses` generates `__init__`): a loop over the plan costs
    2.7 µs a ping, this 1 µs."""
    lines = ["def flatten(node0):", "    v0 = astuple(node0)"]
    names: dict[str, Any] = {"astuple": msgspec.structs.astuple}
    count = 0

    def emit(parent: int, plan: _Plan, indent: str) -> list[int]:
        nonlocal count
        below: list[int] = []
        for slot, kind, child_plan, empty in plan:
            count += 1
            node = count
            names[f"K{node}"], names[f"E{node}"] = kind, empty
            lines.append(f"{indent}c = v{parent}[{slot}]")
            lines.append(f"{indent}if type(c) is K{node}:")
            lines.append(f"{indent}    v{node} = astuple(c)")
            inner = emit(node, child_plan, indent + "    ")
            lines.append(f"{indent}else:")
            lines.append(f"{indent}    v{node} = E{node}")  # the whole subtree: missing
            lines.extend(f"{indent}    v{deeper} = ()" for deeper in inner)
            below += [node, *inner]
        return below

    order = [0, *emit(0, plan, "    ")]
    lines.append("    return (" + ", ".join(f"*v{node}" for node in order) + ")")
    exec("\n".join(lines), names)  # noqa: S102 (our own code, from our own plan)
    flatten: Callable[[Any], Fields] = names["flatten"]
    return flatten


class StructPicker:
    """The places of `paths`, picked from a JSON line by msgspec."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.tree, self.size = _layout(_key_tree(paths), 0)
        #: Each place (and each step on the way to one) and its index among the values.
        self.index: dict[Path, int] = {}
        self._index(self.tree, ())
        types: list[type] = []
        top, plan, _ = _struct(self.tree, types)
        self._flatten = _flattener(plan)
        #: The types a place that is an object may hold: a Struct of ours, or a dict.
        self.object_types = frozenset((dict, *types))
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(top)

    def _index(self, tree: dict[str, Node], prefix: Path) -> None:
        for key, (index, children) in tree.items():
            self.index[(*prefix, key)] = index
            if children is not None:
                self._index(children, (*prefix, key))

    def pick(self, line: bytes | memoryview) -> Fields | None:
        """The values of a line that is valid JSON; None when a place holds something the
        Structs cannot (an array or string where an object is read, a top level that is not
        an object, nesting too deep for msgspec): read it with `fields_of_dict` instead."""
        try:
            return self._flatten(self._decoder.decode(line))
        except (msgspec.DecodeError, RecursionError):  # (ValidationError is a DecodeError)
            return None

    def fields_of_dict(self, doc: dict[str, Any]) -> Fields:
        """The same values from a document decoded by another JSON parser: objects on the way
        become {} and arrays [] (the rules look at their type alone)."""
        out: list[Any] = [MISSING] * self.size
        _pick_dict(doc, self.tree, out)
        return tuple(out)


def _pick_dict(obj: dict[str, Any], tree: dict[str, Node], out: list[Any]) -> None:
    for key, (index, children) in tree.items():
        value = obj.get(key, MISSING)
        if type(value) is dict:
            if children is not None:
                _pick_dict(value, children, out)
            value = {}
        elif type(value) is list:
            value = []
        out[index] = value
