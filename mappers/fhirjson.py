"""FHIR JSON in and out without changing the data: decimals keep their exact text (`100.00` stays `100.00`).

`json.loads` would read `100.00` as the float 100.0 and write it back as `100.0`; a FHIR decimal's precision is
in its text. Numbers with a fraction or an exponent are read as `JsonDecimal` (a Decimal that remembers its text)
and written back verbatim; the R4B models accept them wherever they accept a decimal.
"""

import json
from decimal import Decimal
from typing import Any

import orjson

# Integers this long may not fit the 64 bits orjson writes natively: they are read as JsonDecimal too, which keeps
# their text (FHIR decimals can be written without a fraction).
_LONG_INTEGER_DIGITS = 19


class JsonDecimal(Decimal):
    """A Decimal that remembers the JSON text it was read from."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> "JsonDecimal":
        value = super().__new__(cls, text)
        if not value.is_finite():
            raise ValueError("JSON numbers must be finite")
        value.text = text
        return value

    def __reduce__(self) -> tuple[type["JsonDecimal"], tuple[str]]:
        return (JsonDecimal, (self.text,))

    def __copy__(self) -> "JsonDecimal":
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> "JsonDecimal":
        return self


def _integer(text: str) -> int | JsonDecimal:
    return JsonDecimal(text) if len(text.lstrip("-")) >= _LONG_INTEGER_DIGITS else int(text)


def loads(data: str | bytes) -> Any:
    """Parse JSON, reading numbers with a fraction or exponent (and very long integers) as JsonDecimal."""
    return json.loads(data, parse_float=JsonDecimal, parse_int=_integer)


# Dates and dataclasses are not JSON data: they go to _exact_number (a TypeError), as json.dumps would refuse them.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """Compact JSON (UTF-8 text, no spaces) that writes every Decimal exactly as it was read.

    orjson writes the JSON (about ten times as fast as json.dumps for a packet); each Decimal goes in as a
    pre-written fragment of its text (github.com/ijl/orjson#fragment).
    """
    try:
        return orjson.dumps(value, default=_exact_number, option=_OPTIONS).decode("utf-8")
    except orjson.JSONEncodeError as exc:
        raise (exc.__cause__ if isinstance(exc.__cause__, ValueError | TypeError) else TypeError(str(exc))) from None


def _exact_number(obj: object) -> orjson.Fragment:
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError("JSON numbers must be finite")
        return orjson.Fragment(obj.text if isinstance(obj, JsonDecimal) else str(obj))
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
