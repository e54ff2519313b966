import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.canonical import canonical_json
from shared.errors import MalformedDocument

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_is_identity_and_stable(value):
    encoded = canonical_json(value)
    decoded = json.loads(encoded.decode("utf-8"))
    assert decoded == value
    assert canonical_json(decoded) == encoded


def test_sorted_keys_compact_utf8():
    assert (
        canonical_json({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'.encode()
    )


@pytest.mark.parametrize(
    "bad", [1.5, math.nan, math.inf, {"a": 0.1}, [1, 2.0], {1: "x"}, {"k": b"x"}]
)
def test_refuses_what_has_no_single_encoding(bad):
    with pytest.raises(MalformedDocument):
        canonical_json(bad)


def test_error_names_the_path():
    with pytest.raises(MalformedDocument, match=r"\$\.outer\[1\]"):
        canonical_json({"outer": [1, 2.5]})
