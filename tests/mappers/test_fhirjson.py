"""FHIR JSON in and out without changing the data: decimals keep their exact text."""

from fhir.resources.R4B.observation import Observation

from mappers import fhirjson

EXACT = '{"a":100.00,"b":[1e3,0.0000001,-0.50,2,1.5E-7],"c":"\u00e9\\u0000\\"","d":null,"e":true,"f":{}}'


def test_decimals_are_written_back_exactly_as_read() -> None:
    assert fhirjson.dumps(fhirjson.loads(EXACT)) == EXACT


def test_data_that_holds_the_marker_is_written_by_the_fallback_writer_unchanged() -> None:
    data = fhirjson.loads(EXACT)
    data["g"] = {fhirjson._MARK: [fhirjson._MARK]}  # noqa: SLF001 - the collision the counts guard against
    assert fhirjson.dumps(data) == EXACT[:-1] + f',"g":{{"{fhirjson._MARK}":["{fhirjson._MARK}"]}}}}'  # noqa: SLF001


def test_the_models_accept_the_decimals_they_read() -> None:
    data = fhirjson.loads('{"resourceType":"Observation","status":"final","code":{"text":"x"},'
                          '"valueQuantity":{"value":100.00}}')
    observation = Observation.model_validate(data)
    assert str(observation.valueQuantity.value) == "100.00"
    assert '"value":100.00' in fhirjson.dumps(data)
