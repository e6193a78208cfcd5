from __future__ import annotations

import pytest

from edgec.compiler.frontends import parse_input_shapes
from edgec.errors import UsageError

pytestmark = pytest.mark.unit


def test_parses_repeated_shapes():
    assert parse_input_shapes(["x=1x3x224x224", "mask=1x10"]) == {"x": [1, 3, 224, 224], "mask": [1, 10]}


@pytest.mark.parametrize("bad", ["x", "x=", "x=1,3,224", "=1x3", "x=1x0x3", "x=1xax3"])
def test_malformed_shapes_say_the_expected_form(bad):
    with pytest.raises(UsageError, match=r"NAME=DxDxD|positive"):
        parse_input_shapes([bad])


def test_duplicate_name_is_refused():
    with pytest.raises(UsageError, match="given twice"):
        parse_input_shapes(["x=1x2", "x=1x3"])
