"""FHIR JSON in and out without changing the data: decimals keep their exact text (`100.00` stays `100.00`).

`json.loads` would read `100.00` as the float 100.0 and write it back as `100.0`; a FHIR decimal's precision is
in its text. Numbers with a fraction or an exponent are read as `JsonDecimal` (a Decimal that remembers its text)
and written back verbatim; the R4B models accept them wherever they accept a decimal.
"""

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

_encode_string = json.encoder.encode_basestring  # as json.dumps(ensure_ascii=False) writes strings
# Stands in for a decimal during the C encoder's pass; unique per process, and every use is counted (dumps).
_MARK = f"decimal-{uuid.uuid4().hex}"
_QUOTED_MARK = f'"{_MARK}"'


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


def loads(data: str | bytes) -> Any:
    """Parse JSON, reading numbers with a fraction or exponent as JsonDecimal."""
    return json.loads(data, parse_float=JsonDecimal)


def dumps(value: Any) -> str:
    """Compact JSON (UTF-8 text, no spaces) that writes every Decimal exactly as it was read.

    The C encoder writes each Decimal as a marker string, which is then replaced by the number's text; should the
    data itself hold the marker (the counts disagree), the slower pure-Python writer does the whole job instead.
    """
    numbers: list[str] = []

    def decimal_mark(obj: object) -> str:
        if isinstance(obj, Decimal):
            numbers.append(_number_text(obj))
            return _MARK
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=decimal_mark)
    if not numbers:
        return text
    parts = text.split(_QUOTED_MARK)
    if len(parts) != len(numbers) + 1:
        return "".join(_iter_json(value))
    out = [parts[0]]
    for number, part in zip(numbers, parts[1:]):
        out += (number, part)
    return "".join(out)


def _number_text(number: Decimal) -> str:
    if not number.is_finite():
        raise ValueError("JSON numbers must be finite")
    return number.text if isinstance(number, JsonDecimal) else str(number)


def _iter_json(value: Any) -> Iterator[str]:
    """The JSON text of value, piece by piece (the fallback writer)."""
    if isinstance(value, str):
        yield _encode_string(value)
    elif isinstance(value, dict):
        yield "{"
        for n, (key, item) in enumerate(value.items()):
            yield f"{',' if n else ''}{_encode_string(str(key))}:"
            yield from _iter_json(item)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ","
            yield from _iter_json(item)
        yield "]"
    elif isinstance(value, Decimal):
        yield _number_text(value)
    else:
        yield json.dumps(value)
