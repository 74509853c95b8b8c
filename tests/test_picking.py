"""The compiled field picker (families/picking.py): msgspec Structs of exactly the places read.

Each expected tuple is written by hand from the places' layout: a node's own keys in order,
then each child object's subtree.
"""

from __future__ import annotations

from datetime import date

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from crash_rate_aggregates.families import glean
from crash_rate_aggregates.families.picking import MISSING, StructPicker

PATHS = [("a",), ("b", "c"), ("b", "d", "e"), ("f",)]
PICKER = StructPicker(PATHS)


def test_the_layout_is_a_nodes_keys_then_its_children() -> None:
    # top: a, b, f (0-2); b's keys: c, d (3-4); d's keys: e (5)
    assert PICKER.index == {("a",): 0, ("b",): 1, ("f",): 2, ("b", "c"): 3, ("b", "d"): 4,
                            ("b", "d", "e"): 5}
    assert PICKER.size == 6


def test_values_missing_keys_and_null() -> None:
    fields = PICKER.pick(b'{"a": 1, "x": [1, {"a": 2}], "b": {"c": null, "d": {"e": "s"}}}')
    assert fields is not None
    assert fields[0] == 1 and fields[2] is MISSING
    assert fields[3] is None and fields[5] == "s"
    assert type(fields[1]) in PICKER.object_types and type(fields[4]) in PICKER.object_types


def test_a_step_that_is_null_or_missing_finds_no_key_below() -> None:
    assert PICKER.pick(b"{}") == (MISSING,) * 6
    assert PICKER.pick(b'{"b": null}') == (MISSING, None, MISSING, MISSING, MISSING, MISSING)
    fields = PICKER.pick(b'{"b": {"d": null}}')
    assert fields is not None
    assert fields[3] is MISSING and fields[4] is None and fields[5] is MISSING


def test_leaves_take_any_json_value() -> None:
    fields = PICKER.pick(b'{"a": {"deep": [1, 2]}, "f": [true]}')
    assert fields is not None
    assert fields[0] == {"deep": [1, 2]} and fields[2] == [True]


def test_a_step_of_another_type_is_left_to_the_general_path() -> None:
    for text in (b'{"b": "x"}', b'{"b": [1]}', b'{"b": {"d": 5}}', b"[1]", b'"s"'):
        assert PICKER.pick(text) is None, text
    assert PICKER.fields_of_dict(orjson.loads(b'{"b": {"d": 5}, "a": 2}')) == (
        2, {}, MISSING, MISSING, 5, MISSING)


def test_the_last_of_a_repeated_key_counts() -> None:
    fields = PICKER.pick(b'{"a": 1, "a": 2}')
    assert fields is not None and fields[0] == 2


# -- the Glean family: the picker and the general path agree on any document ------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
_PLACES = sorted(glean.FIELD_INDEX)


@st.composite
def glean_like(draw: st.DrawFn) -> bytes:
    """A document that sets random values at random places the Glean rules read (some of them
    objects, arrays or null where an object is read), over a real crash or baseline shape."""
    doc: dict[str, object] = {"ping_info": {"start_time": "2025-06-01T10:00+02:00"},
                              "metadata": {"document_type": draw(st.sampled_from(
                                  ["crash", "baseline", "x"]))}}
    for path in draw(st.lists(st.sampled_from(_PLACES), max_size=8)):
        node = doc
        for key in path[:-1]:
            below = node.get(key)
            if not isinstance(below, dict):
                below = node[key] = {}
            node = below
        node[path[-1]] = draw(_values)
    return orjson.dumps(doc)


@settings(max_examples=400, deadline=None)
@given(glean_like())
def test_the_glean_picker_and_the_dict_path_agree(text: bytes) -> None:
    day = date(2025, 6, 2)
    assert glean.evaluate_line(text, day) == glean.evaluate_doc(orjson.loads(text), day)
