"""FHIR JSON in and out without changing the data: decimals keep their exact text."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fhir.resources.R4B.observation import Observation

from mappers import fhirjson

EXACT = '{"a":100.00,"b":[1e3,0.0000001,-0.50,2,1.5E-7],"c":"\u00e9\\u0000\\"","d":null,"e":true,"f":{}}'


def test_decimals_are_written_back_exactly_as_read() -> None:
    assert fhirjson.dumps(fhirjson.loads(EXACT)) == EXACT


def test_integers_too_long_for_64_bits_are_written_back_exactly() -> None:
    text = '{"a":123456789012345678901234567890,"b":-9223372036854775809,"c":9007199254740993,"d":[0,-1]}'
    data = fhirjson.loads(text)
    assert isinstance(data["c"], int)
    assert fhirjson.dumps(data) == text


def test_what_is_not_json_data_is_refused() -> None:
    with pytest.raises(TypeError):
        fhirjson.dumps({"when": datetime(2024, 1, 1, tzinfo=UTC)})
    with pytest.raises(ValueError, match="finite"):
        fhirjson.dumps({"value": Decimal("NaN")})


def test_the_models_accept_the_decimals_they_read() -> None:
    data = fhirjson.loads('{"resourceType":"Observation","status":"final","code":{"text":"x"},'
                          '"valueQuantity":{"value":100.00}}')
    observation = Observation.model_validate(data)
    assert str(observation.valueQuantity.value) == "100.00"
    assert '"value":100.00' in fhirjson.dumps(data)
