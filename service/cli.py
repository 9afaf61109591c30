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
def demo(once: bool, patient: str | None) -> None:
    """Start the sandbox EHR and the service, and run one second-opinion referral end to end."""
    from service.demo import DemoError, run_demo

    try:
        sys.exit(run_demo(once=once, patient=patient, say=click.echo))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Web side only; run `second-opinion worker` for the write-back.")
def serve(host: str, port: int, no_worker: bool) -> None:
    """Run the service against the EHR at SECOND_OPINION_FHIR_BASE_URL (with an in-process write-back worker)."""
    from service.queue import start_consumer, stop_consumer
    from service.serving import serve_forever

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
    from service.ehr.capability import capability_report
    from service.ehr.client import FhirClient, build_session

    client = FhirClient(fhir_url, build_session(max_retries=1), timeout=timeout,
                        auth_header=f"Bearer {token}" if token else None)
    report = capability_report(client, client.smart_configuration())
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
    click.echo(f"SMART:         {'yes, token endpoint ' + smart.get('token_endpoint', '?') if smart else 'not published'}")
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
    """Build a second-opinion packet straight from a FHIR server (no database, nothing written to the server)."""
    import uuid
    from datetime import UTC, date, datetime

    from mappers.ids import random_ids
    from mappers.packet import ReferralRequest, build_referral_bundle
    from mappers.selection import history_before
    from service.ehr.client import FhirClient, build_session
    from service.ehr.fetch import fetch_patient_record
    from service.errors import ServiceError

    try:
        since_date = date.fromisoformat(since) if since else None
    except ValueError as exc:
        raise click.BadParameter("use YYYY-MM-DD", param_hint="--since") from exc
    client = FhirClient(fhir_url, build_session(), timeout=timeout, auth_header=f"Bearer {token}" if token else None)
    progress = FetchProgress(sys.stderr.isatty())
    try:
        record = fetch_patient_record(client, patient_id, progress=progress.update)
    except ServiceError as exc:
        progress.done()
        raise click.ClickException(exc.diagnostics) from exc
    progress.done()
    exclude = history_before(record, since_date) if since_date else []
    built = build_referral_bundle(record, ReferralRequest(str(uuid.uuid4()), question, exclude=exclude),
                                  now=datetime.now(UTC), new_id=random_ids())
    document = built.bundle.model_dump_json(exclude_none=True, indent=2)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(document)
    else:
        click.echo(document)
    counts = ", ".join(f"{code}: {n}" for code, n in built.counts.items())
    click.echo(f"packet {built.bundle.identifier.value}: {len(built.bundle.entry)} entries ({counts}); "
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
def sandbox(host: str, port: int, empty: bool, profile: str, latency_ms: int, page_size: int) -> None:
    """Run the built-in sandbox EHR (a FHIR R4 server with synthetic patients)."""
    from fixtures.sandbox import run_sandbox

    logging.getLogger().setLevel(logging.INFO)
    run_sandbox(host=host, port=port, load_fixtures=not empty, profile=profile, latency_ms=latency_ms,
                page_size=page_size)


# -- write-back workers, retries and the database schema (issue 6) -------------------------------------------
@main.command()
@click.option("--threads", default=4, show_default=True, type=int, help="Write-back worker threads.")
def worker(threads: int) -> None:
    """Run write-back workers (a huey consumer and the outbox sweeper) until Ctrl-C or SIGTERM."""
    from service.queue import get_queue, run_worker

    if not _bare_app().config.get("FHIR_BASE_URL"):
        raise click.ClickException("no EHR configured: set SECOND_OPINION_FHIR_BASE_URL")
    app = _configured_app()
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("huey").setLevel(logging.WARNING)
    from sqlalchemy.engine import make_url

    queue_url = make_url(get_queue(app).url).render_as_string(hide_password=True)
    click.echo(f"second-opinion worker: {threads} thread(s), queue {queue_url}, EHR {app.config['FHIR_BASE_URL']}")
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
        click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at "
                   f"{migrations.current_revision(engine)}")
    except migrations.ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()


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


if __name__ == "__main__":
    main()
