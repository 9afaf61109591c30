"""The sandbox's JSON: decimals and long integers written back exactly, compact or pretty, served JSON verbatim."""

from decimal import Decimal

import pytest

from fixtures.sandbox import jsonio

EXACT = '{"a":100.00,"b":[1e3,0.0000001,-0.50,2,1.5E-7],"c":"\u00e9\\u0000\\"","d":null,"e":true,"f":{},"g":[]}'


def test_compact_output_is_the_input() -> None:
    assert jsonio.dumps(jsonio.loads(EXACT)) == EXACT


def test_integers_too_long_for_64_bits_are_written_back_exactly() -> None:
    text = '{"big":123456789012345678901234567890,"negative":-9223372036854775809,"small":42}'
    assert jsonio.dumps(jsonio.loads(text)) == text


def test_pretty_output_indents_by_two_and_keeps_decimals() -> None:
    value = jsonio.loads('{"a":{"b":[1.50,{}]},"c":[]}')
    assert jsonio.dumps(value, pretty=True) == '{\n  "a": {\n    "b": [\n      1.50,\n      {}\n    ]\n  },\n  "c": []\n}'


def test_serialised_json_goes_in_verbatim_compact_and_indented_with_the_rest_when_pretty() -> None:
    inner = jsonio.loads('{"value":2.50}')
    value = {"entry": [jsonio.RawJson('{"value":2.50}', inner)]}
    assert jsonio.dumps(value) == '{"entry":[{"value":2.50}]}'
    assert jsonio.dumps(value, pretty=True) == '{\n  "entry": [\n    {\n      "value": 2.50\n    }\n  ]\n}'


def test_what_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError):
        jsonio.loads('{"a":NaN}')
    with pytest.raises(TypeError):
        jsonio.dumps({"a": Decimal("1.5")})
    with pytest.raises(TypeError):
        jsonio.dumps({"a": {1, 2}})
