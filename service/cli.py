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
def serve(host: str, port: int) -> None:
    """Run the service against the EHR at SECOND_OPINION_FHIR_BASE_URL."""
    from service import create_app
    from service.serving import serve_forever

    app = create_app()
    if not app.config.get("FHIR_BASE_URL"):
        raise click.ClickException(
            "no EHR configured: set SECOND_OPINION_FHIR_BASE_URL to the EHR's FHIR base URL "
            "(for a local try: `second-opinion sandbox` in another terminal, then "
            "SECOND_OPINION_FHIR_BASE_URL=http://127.0.0.1:8090/fhir)")
    logging.getLogger().setLevel(logging.INFO)
    click.echo(f"second-opinion serving on http://{host}:{port} (EHR {app.config['FHIR_BASE_URL']})")
    serve_forever(app, host, port)


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


if __name__ == "__main__":
    main()
