"""`second-opinion consult-from-ccda FILE [--referral ID]` as a user runs it."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from fixtures.consultant import ccda_consult_for_packet
from tests.conftest import CORPUS
from tests.test_consults import HOSTILE, other_patient, sent_referral

CLI = [sys.executable, "-m", "service.cli", "consult-from-ccda"]
CONSULTATION_NOTE = CORPUS / "ccda" / "hl7-examples_Consultation_Note.xml"
MALFORMED = CORPUS / "ccda" / "hl7-companion_CCD_MALFORMED.xml"


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SECOND_OPINION_")}
    return subprocess.run([*CLI, *args], cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


def test_prints_the_consult_document_as_fhir_json(tmp_path: Path) -> None:
    result = run([str(CONSULTATION_NOTE)], tmp_path)
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "document"
    composition = bundle["entry"][0]["resource"]
    assert composition["type"]["coding"][0]["code"] == "11488-4"
    assert {"42349-1", "51848-0", "18776-5"} <= {s["code"]["coding"][0]["code"] for s in composition["section"]
                                                if s.get("code")}
    assert "Traceback" not in result.stderr


def test_a_broken_document_is_an_error_that_says_what_is_wrong(tmp_path: Path) -> None:
    result = run([str(MALFORMED)], tmp_path)
    assert result.returncode == 1
    assert "not well-formed XML" in result.stderr and "line 1875" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_recover_reads_a_broken_document_and_warns(tmp_path: Path) -> None:
    result = run([str(MALFORMED), "--recover"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["type"] == "document"
    assert "warning: recovered from malformed XML" in result.stderr


def test_a_document_with_a_dtd_is_refused(tmp_path: Path) -> None:
    result = run([str(HOSTILE / "billion-laughs.ccda.xml")], tmp_path)
    assert result.returncode == 1
    assert "DTD" in result.stderr and "Traceback" not in result.stderr


def test_unknown_referral_is_a_clear_error(make_app, tmp_path: Path) -> None:  # noqa: ANN001
    database = tmp_path / "service.sqlite3"
    make_app(DATABASE_URL=f"sqlite:///{database}", WRITEBACK="off")  # creates the schema
    result = run([str(CONSULTATION_NOTE), "--referral", "no-such-referral"], tmp_path,
                 SECOND_OPINION_DATABASE_URL=f"sqlite:///{database}")
    assert result.returncode == 1
    assert "no referral no-such-referral" in result.stderr and "Traceback" not in result.stderr


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    result = run([str(CONSULTATION_NOTE), "--referral", "x"], tmp_path,
                 SECOND_OPINION_DATABASE_URL=f"sqlite:///{tmp_path / 'none.sqlite3'}")
    assert result.returncode == 1
    assert "no database at" in result.stderr
    assert not (tmp_path / "none.sqlite3").exists()


def test_with_a_referral_the_patient_is_checked_and_the_order_linked(make_app, tmp_path: Path) -> None:  # noqa: ANN001
    database = tmp_path / "service.sqlite3"
    client = make_app(DATABASE_URL=f"sqlite:///{database}", WRITEBACK="off").test_client()
    referral_id, packet = sent_referral(client)
    env = {"SECOND_OPINION_DATABASE_URL": f"sqlite:///{database}"}
    good, wrong = tmp_path / "consult.xml", tmp_path / "wrong-patient.xml"
    good.write_bytes(ccda_consult_for_packet(packet, now=datetime.now(UTC)))
    wrong.write_bytes(ccda_consult_for_packet(packet, now=datetime.now(UTC), patient=other_patient(packet)))

    result = run([str(good), "--referral", referral_id], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    composition = json.loads(result.stdout)["entry"][0]["resource"]
    order = next(e.resource for e in packet.entry if e.resource.get_resource_type() == "ServiceRequest")
    assert order.identifier[0].value in {e["valueReference"]["identifier"]["value"] for e in composition["extension"]}
    assert composition["section"][0]["title"] == "Second-opinion summary"
    assert "Mixed hyperlipidemia" in composition["section"][0]["text"]["div"]

    result = run([str(wrong), "--referral", referral_id], tmp_path, **env)
    assert result.returncode == 1
    assert "different patient" in result.stderr and "SO-9999" not in result.stderr
    assert client.get(f"/api/referrals/{referral_id}").get_json()["status"] == "requested"  # nothing stored
