"""The `second-opinion` command: demo, serve, sandbox."""

import logging
import sys

import click



@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Second-opinion referrals for EHRs over FHIR R4."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--once", is_flag=True, help="Run one referral end to end, print the summary and exit.")
@click.option("--patient", default=None, help="Fixture patient id (default: the first fixture patient).")
@click.option("--auth", type=click.Choice(["none", "smart"]), default="none", show_default=True,
              help="smart: the sandbox requires SMART on FHIR; the referral runs in an EHR-launched session and "
                   "the write-back uses backend services.")
def demo(once: bool, patient: str | None, auth: str) -> None:
    """Start the sandbox EHR and the service, and run one second-opinion referral end to end."""
    from service.demo import DemoError, run_demo

    try:
        sys.exit(run_demo(once=once, patient=patient, auth=auth, say=click.echo))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Web side only; run `second-opinion worker` for the write-back.")
def serve(host: str, port: int, no_worker: bool) -> None:
    """Run the service against the EHR at SECOND_OPINION_FHIR_BASE_URL (with an in-process write-back worker)."""
    from service.queue import start_consumer, stop_consumer
    from service.serving import serve_forever, settle_process

    if not _bare_app().config.get("FHIR_BASE_URL"):  # before anything is opened or created
        raise click.ClickException(
            "no EHR configured: set SECOND_OPINION_FHIR_BASE_URL to the EHR's FHIR base URL "
            "(for a local try: `second-opinion sandbox` in another terminal, then "
            "SECOND_OPINION_FHIR_BASE_URL=http://127.0.0.1:8090/fhir)")
    app = _configured_app()
    logging.getLogger().setLevel(logging.INFO)
    click.echo(f"second-opinion serving on http://{host}:{port} (EHR {app.config['FHIR_BASE_URL']})")
    if not no_worker:
        start_consumer(app)
    settle_process()
    try:
        serve_forever(app, host, port)
    finally:
        stop_consumer(app)


@main.command()
@click.option("--fhir", "fhir_url", required=True, help="The FHIR server's base URL.")
@click.option("--token", default=None, envvar="SECOND_OPINION_FHIR_TOKEN", help="Bearer token (or the env var).")
@click.option("--timeout", default=30.0, show_default=True, type=float)
def check(fhir_url: str, token: str | None, timeout: float) -> None:
    """Report what a FHIR server offers and whether the service can work with it."""
    from service.auth.discovery import discover
    from service.ehr.capability import capability_report
    from service.ehr.client import FhirClient, build_session
    from service.errors import ServiceError

    client = FhirClient(fhir_url, build_session(max_retries=1), timeout=timeout,
                        auth_header=f"Bearer {token}" if token else None)
    try:
        smart = discover(client.session, client.base_url, timeout=timeout)
    except ServiceError:
        smart = None
    report = capability_report(client, smart)
    yes = {True: "yes", False: "no"}
    click.echo(f"server:        {report.base_url}")
    click.echo(f"software:      {report.software or 'not stated'}")
    click.echo(f"FHIR version:  {report.fhir_version or 'unknown'}")
    click.echo(f"formats:       {', '.join(report.formats) or 'not stated'}")
    for resource_type, supported in report.searches.items():
        click.echo(f"search {resource_type + ':':<22}{yes[supported]}")
    click.echo(f"medications:   from {' and '.join(report.medications_from) or 'nowhere'}")
    click.echo(f"$everything:   {yes[report.everything]}")
    for resource_type, supported in report.writes.items():
        click.echo(f"write {resource_type + ':':<23}{yes[supported]}")
    smart = report.smart
    click.echo(f"SMART:         {'yes, token endpoint ' + smart.token_endpoint if smart else 'not published'}"
               f"{' (permission-v2)' if smart and smart.permission_v2 else ''}")
    for note in report.notes:
        click.echo(f"note:          {note}")
    if report.usable:
        click.echo("verdict:       the service can work with this server")
        return
    for problem in report.problems:
        click.echo(f"problem:       {problem}", err=True)
    raise click.ClickException("the service cannot work with this server (see the problems above)")


@main.command()
@click.option("--fhir", "fhir_url", required=True, help="The FHIR server's base URL.")
@click.option("--patient", "patient_id", required=True, help="The Patient id on that server.")
@click.option("--question", default="Please review the diagnosis and the proposed treatment.", show_default=True)
@click.option("--since", default=None, help="Leave out history before this date (YYYY-MM-DD).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the packet here (default: standard output).")
@click.option("--token", default=None, envvar="SECOND_OPINION_FHIR_TOKEN", help="Bearer token (or the env var).")
@click.option("--timeout", default=30.0, show_default=True, type=float)
def packet(fhir_url: str, patient_id: str, question: str, since: str | None, output: str | None,
           token: str | None, timeout: float) -> None:
    """Build a second-opinion packet straight from a FHIR server (no database, nothing written to the server).

    The packet is the one the service would draft: the EHR's resources as it sent them (decimals exact), checked
    as a FHIR document, written as compact JSON.
    """
    import uuid
    from datetime import UTC, date, datetime

    from mappers.ids import random_ids
    from mappers.packet import ReferralRequest, build_referral_bundle
    from mappers.selection import history_before
    from mappers.validation import check_document_json
    from service.ehr.client import FhirClient, build_session
    from service.ehr.fetch import fetch_patient
    from service.errors import ServiceError

    try:
        since_date = date.fromisoformat(since) if since else None
    except ValueError as exc:
        raise click.BadParameter("use YYYY-MM-DD", param_hint="--since") from exc
    client = FhirClient(fhir_url, build_session(), timeout=timeout, auth_header=f"Bearer {token}" if token else None)
    progress = FetchProgress(sys.stderr.isatty())
    try:
        fetched = fetch_patient(client, patient_id, progress=progress.update)
    except ServiceError as exc:
        progress.done()
        raise click.ClickException(exc.diagnostics) from exc
    progress.done()
    record = fetched.record
    exclude = history_before(record, since_date) if since_date else []
    built = build_referral_bundle(record, ReferralRequest(str(uuid.uuid4()), question, exclude=exclude),
                                  now=datetime.now(UTC), new_id=random_ids(), sources=fetched.sources,
                                  references=fetched.references, rows=fetched.rows)
    problems = check_document_json(built.document)
    if problems:
        raise click.ClickException(f"the packet failed the document checks: {problems[0]}")
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(built.json)
    else:
        click.echo(built.json)
    counts = ", ".join(f"{code}: {n}" for code, n in built.counts.items())
    click.echo(f"packet {built.identifier}: {len(built.document['entry'])} entries ({counts}); "
               f"{client.request_count} requests", err=True)
    for item in built.readiness:
        if item.status != "ok":
            click.echo(f"readiness: {item.status}: {item.message}", err=True)
    for warning in record.warnings:
        click.echo(f"warning: {warning}", err=True)


class FetchProgress:
    """Pages fetched per resource type: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.state: dict[str, str] = {}

    def update(self, resource_type: str, done: int, known: int | None) -> None:
        self.state[resource_type] = f"{done}/{known}" if known else f"{done}"
        if self.terminal:
            line = "  ".join(f"{t} {p}" for t, p in self.state.items())
            click.echo(f"\r\033[Kfetching: {line}", nl=False, err=True)
        else:
            click.echo(f"fetched {resource_type} page {self.state[resource_type]}", err=True)

    def done(self) -> None:
        if self.terminal and self.state:
            click.echo("", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--empty", is_flag=True, help="Start with no patients.")
@click.option("--profile", type=click.Choice(["generic", "epic", "cerner", "hapi"]), default="generic",
              show_default=True, help="Behave like this kind of EHR.")
@click.option("--latency-ms", default=0, show_default=True, type=int, help="Delay every FHIR answer.")
@click.option("--page-size", default=50, show_default=True, type=int, help="Default search page size.")
@click.option("--max-page-size", default=None, type=int,
              help="Largest page a client may ask for with _count [default: 1000, at least --page-size].")
@click.option("--auth", type=click.Choice(["none", "smart"]), default="none", show_default=True,
              help="smart: behind a SMART on FHIR authorization server (launch, PKCE, scopes, backend services).")
def sandbox(host: str, port: int, empty: bool, profile: str, latency_ms: int, page_size: int,
            max_page_size: int | None, auth: str) -> None:
    """Run the built-in sandbox EHR (a FHIR R4 server with synthetic patients)."""
    from fixtures.sandbox import run_sandbox

    logging.getLogger().setLevel(logging.INFO)
    run_sandbox(host=host, port=port, load_fixtures=not empty, profile=profile, latency_ms=latency_ms,
                page_size=page_size, max_page_size=max_page_size or max(page_size, 1000), auth=auth)


# -- write-back workers, retries and the database schema (issue 6) -------------------------------------------
@main.command()
@click.option("--threads", default=4, show_default=True, type=int, help="Write-back worker threads.")
def worker(threads: int) -> None:
    """Run write-back workers (a huey consumer and the outbox sweeper) until Ctrl-C or SIGTERM."""
    from service.queue import get_queue, run_worker
    from service.serving import settle_process

    if not _bare_app().config.get("FHIR_BASE_URL"):
        raise click.ClickException("no EHR configured: set SECOND_OPINION_FHIR_BASE_URL")
    app = _configured_app()
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("huey").setLevel(logging.WARNING)
    from sqlalchemy.engine import make_url

    queue_url = make_url(get_queue(app).url).render_as_string(hide_password=True)
    click.echo(f"second-opinion worker: {threads} thread(s), queue {queue_url}, EHR {app.config['FHIR_BASE_URL']}")
    settle_process()
    run_worker(app, threads)


@main.command()
@click.argument("referral_id")
def retry(referral_id: str) -> None:
    """Resume a referral whose write-back failed (failed → in-progress, queued again with a fresh budget)."""
    from service.errors import ServiceError
    from service.queue import resume_writeback

    app = _configured_app()
    try:
        resume_writeback(app, referral_id, actor="cli")
    except ServiceError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(f"referral {referral_id}: write-back resumed; a worker will carry it out")


@main.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Bring the database at SECOND_OPINION_DATABASE_URL (SQLite or PostgreSQL) up to the newest schema."""
    from service.store import migrations
    from service.store.repository import build_engine, database_url

    app = _bare_app()
    engine = build_engine(database_url(app))
    try:
        migrations.upgrade(engine, revision)
        at = migrations.current_revision(engine)
    except migrations.ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    if at == migrations.HEAD:
        # Once, before any web or queue worker starts: the tables other parts still create themselves (huey's,
        # CDS Hooks', auth's) come into being here, not in a race between processes starting together.
        from service.queue import stop_consumer

        stop_consumer(_configured_app())
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at {at}")


def _configured_app():  # noqa: ANN202 - a Flask app
    """The service app from SECOND_OPINION_* settings; a configuration problem is a clear error, not a traceback."""
    from service import create_app
    from service.errors import ConfigurationError

    try:
        return create_app()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


def _bare_app():  # noqa: ANN202 - a Flask app
    """A Flask app holding only the settings (instance folder, SECOND_OPINION_*), nothing started."""
    from pathlib import Path

    from flask import Flask

    from service.config import DEFAULTS, ENV_PREFIX

    app = Flask("service", instance_relative_config=True)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env(ENV_PREFIX)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    return app


# -- consults from C-CDA (issue 5) --------------------------------------------------------------------------
@main.command("consult-from-ccda")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--referral", "referral_id", default=None,
              help="Check the patient against this referral (local database) and link its ServiceRequest.")
@click.option("--recover", is_flag=True, help="Read malformed XML with lxml's recover mode (reported as a warning).")
def consult_from_ccda(file: str, referral_id: str | None, recover: bool) -> None:
    """Map a C-CDA consult document to our FHIR consult document and print it as FHIR JSON."""
    from datetime import UTC, datetime

    from mappers.ccda.document import map_ccda_consult
    from mappers.ccda.parser import parse_ccda
    from mappers.errors import MappingError
    from mappers.ids import random_ids
    from mappers.validation import check_document_bundle
    from service.errors import ServiceError

    data = click.get_binary_stream("stdin").read() if file == "-" else open(file, "rb").read()  # noqa: SIM115
    now = datetime.now(UTC)
    try:
        if referral_id is None:
            mapping = map_ccda_consult(parse_ccda(data, allow_recover=recover), None, now=now, new_id=random_ids())
            bundle, warnings = mapping.bundle, mapping.warnings
            problems = check_document_bundle(bundle)
            if problems:
                raise MappingError(f"the result is not a valid FHIR document: {problems[0]}")
        else:
            bundle, warnings = _consult_for_referral(data, referral_id, recover, now, random_ids())
    except (MappingError, ServiceError) as exc:
        raise click.ClickException(f"{file}: {exc.diagnostics} (HTTP equivalent {exc.status})") from exc
    click.echo(bundle.model_dump_json(exclude_none=True, indent=2))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def _consult_for_referral(data: bytes, referral_id: str, recover: bool, now, new_id):  # noqa: ANN001, ANN202
    """Map C-CDA bytes against a stored referral: patient checked, ServiceRequest linked, concordance summarised."""
    from pathlib import Path

    from fhir.resources.R4B.bundle import Bundle
    from lxml import etree
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from mappers.ccda.parser import parse_ccda
    from service.consults import build_consult_document
    from service.errors import NotFound
    from service.referrals import consult_context
    from service.store.repository import ReferralRepository, build_engine, database_url

    url = make_url(database_url(_bare_app()))
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise click.ClickException(f"no database at {url.database}: set SECOND_OPINION_DATABASE_URL to the "
                                   "service's database")
    engine = build_engine(url.render_as_string(hide_password=False))
    try:
        referral = ReferralRepository(engine).get(referral_id)
    except NotFound as exc:
        raise click.ClickException(f"no referral {referral_id} in the database "
                                   f"{engine.url.render_as_string(hide_password=True)}") from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read referrals from {engine.url.render_as_string(hide_password=True)} "
                                   f"({type(exc).__name__}); set SECOND_OPINION_DATABASE_URL or run "
                                   "`second-opinion db upgrade`") from exc
    finally:
        engine.dispose()
    if recover:
        parsed = parse_ccda(data, allow_recover=True)  # the service never recovers; the CLI may, when asked
        data = etree.tostring(parsed.root, xml_declaration=True, encoding="UTF-8")
    packet = Bundle.model_validate_json(referral.packet_json)
    built = build_consult_document(data, "application/cda+xml", consult_context(referral, packet), packet,
                                   now=now, new_id=new_id)
    return built.bundle, built.warnings


if __name__ == "__main__":
    main()
