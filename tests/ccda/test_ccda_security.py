"""parse_ccda refuses hostile input: XXE, billion laughs, external DTDs, oversize, non-XML and non-CDA."""

from pathlib import Path

import pytest

from mappers.ccda.parser import MAX_CCDA_BYTES, parse_ccda
from mappers.errors import MappingError

SECRET = "s3cr3t-marker-7f2c"
MINIMAL_BODY = b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&e;</title></ClinicalDocument>'


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A local file whose content must never show up anywhere."""
    path = tmp_path / "secret.txt"
    path.write_text(SECRET, encoding="utf-8")
    return path


def _assert_rejected(data: bytes, status: int = 400, *, allow_recover: bool = False) -> MappingError:
    with pytest.raises(MappingError) as caught:
        parse_ccda(data, allow_recover=allow_recover)
    assert caught.value.status == status
    assert SECRET not in str(caught.value) and SECRET not in caught.value.diagnostics
    return caught.value


@pytest.mark.parametrize("allow_recover", [False, True], ids=["strict", "recovering"])
def test_xxe_file_entity_is_rejected_without_reading_the_file(secret_file: Path, allow_recover: bool) -> None:
    data = (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret_file}">]>'.encode()
            + MINIMAL_BODY)
    error = _assert_rejected(data, allow_recover=allow_recover)
    assert "DTD" in error.diagnostics


def test_the_classic_xxe_example_is_rejected() -> None:
    data = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + MINIMAL_BODY
    error = _assert_rejected(data)
    assert "root:" not in error.diagnostics


def test_billion_laughs_is_rejected_quickly() -> None:
    entities = "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    data = (f'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY l0 "lol">{entities}]>'
            '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&l9;</title></ClinicalDocument>').encode()
    _assert_rejected(data)
    _assert_rejected(data, allow_recover=True)


@pytest.mark.parametrize("allow_recover", [False, True], ids=["strict", "recovering"])
def test_external_dtd_is_rejected_and_never_fetched(loopback_listener: tuple[int, list[bytes]], allow_recover: bool) -> None:
    port, received = loopback_listener
    data = (f'<?xml version="1.0"?><!DOCTYPE ClinicalDocument SYSTEM "http://127.0.0.1:{port}/x.dtd">'
            '<ClinicalDocument xmlns="urn:hl7-org:v3"/>').encode()
    _assert_rejected(data, allow_recover=allow_recover)
    assert received == []


def test_external_parameter_entity_is_never_fetched(loopback_listener: tuple[int, list[bytes]]) -> None:
    port, received = loopback_listener
    data = (f'<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]>'.encode() + MINIMAL_BODY)
    _assert_rejected(data, allow_recover=True)
    assert received == []


def test_doctype_after_comments_and_processing_instructions_is_found() -> None:
    data = (b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- hello -->\n<?xml-stylesheet href="CDA.xsl"?>\n'
            b'<!DOCTYPE ClinicalDocument><ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    assert "DTD" in _assert_rejected(data).diagnostics


def test_utf16_doctype_is_rejected() -> None:
    data = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY e "x">]>'
            '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&e;</title></ClinicalDocument>').encode("utf-16")
    _assert_rejected(data)


def test_oversize_input_is_413_before_parsing() -> None:
    with pytest.raises(MappingError) as caught:
        parse_ccda(b"<" * 101, max_bytes=100)
    assert caught.value.status == 413
    assert MAX_CCDA_BYTES == 20 * 1024 * 1024


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "not well-formed"),
    (b"%PDF-1.5 binary", "not well-formed"),
    (b"<ClinicalDocument xmlns='urn:hl7-org:v3'>", "not well-formed"),
    (b"<Bundle xmlns='http://hl7.org/fhir'/>", "root element"),
    (b"<ClinicalDocument/>", "root element"),
], ids=["empty", "not-xml", "truncated", "fhir-not-cda", "cda-without-namespace"])
def test_not_xml_or_not_cda_is_400(data: bytes, reason: str) -> None:
    assert reason in _assert_rejected(data).diagnostics


def test_malformed_xml_recovers_only_when_allowed() -> None:
    data = (b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>t</title><component><structuredBody>'
            b'<component><section><text><content ID=bad>x</content></text></section></component>'
            b'</structuredBody></component></ClinicalDocument>')
    _assert_rejected(data)
    doc = parse_ccda(data, allow_recover=True)
    assert doc.recovered and doc.warnings[0].startswith("recovered from malformed XML: ")


def test_non_bytes_input_is_400() -> None:
    with pytest.raises(MappingError) as caught:
        parse_ccda("<ClinicalDocument/>")  # type: ignore[arg-type]
    assert caught.value.status == 400


def test_the_parser_itself_resolves_nothing_even_past_the_doctype_check(
        secret_file: Path, loopback_listener: tuple[int, list[bytes]]) -> None:
    """Defence in depth: had a DTD slipped past the prolog check, the parser would neither read nor fetch."""
    from lxml import etree

    from mappers.ccda.parser import XML_PARSER

    port, received = loopback_listener
    data = (f'<!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret_file}">'
            f'<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]>'.encode() + MINIMAL_BODY)
    try:
        root = etree.fromstring(data, XML_PARSER)
    except etree.XMLSyntaxError:
        root = None
    if root is not None:
        assert SECRET not in etree.tostring(root, encoding="unicode")
    external = f'<!DOCTYPE x SYSTEM "http://127.0.0.1:{port}/x.dtd"><x/>'.encode()
    etree.fromstring(external, XML_PARSER)
    assert received == []
