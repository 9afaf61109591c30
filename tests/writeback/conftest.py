"""Write-back test fixtures: a database per test (SQLite and PostgreSQL) and a sandbox EHR of the test's own."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from fixtures.sandbox import SandboxServer
from service.store import migrations
from service.store.repository import build_engine
PG_ADMIN_URL_ENV = "SECOND_OPINION_TEST_PG_URL"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASES = ["sqlite", "postgresql"]


def pg_admin_url() -> str:
    """Where the tests create and drop their PostgreSQL databases (trust auth on 127.0.0.1 by default)."""
    return os.environ.get(PG_ADMIN_URL_ENV, PG_ADMIN_URL)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def require_postgresql() -> None:
    """Skip when PostgreSQL is unreachable on a developer's machine; under CI that is a failure."""
    try:
        psycopg.connect(_libpq(pg_admin_url()), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {pg_admin_url()} ({type(exc).__name__}); .ci/run starts it")
        pytest.skip("PostgreSQL is not reachable here (.ci/run starts it; CI=true makes this a failure)")


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards."""
    require_postgresql()
    name = f"so_test_{uuid.uuid4().hex[:12]}"
    admin = _libpq(pg_admin_url())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database at the newest schema: a SQLite file, and a PostgreSQL database created for the test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'writeback.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    engine = build_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox EHR of this test's own: its counts and faults are nobody else's."""
    with SandboxServer() as server:
        yield server
