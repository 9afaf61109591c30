"""Alembic migrations for the store: `second-opinion db upgrade`, and the SQLite auto-upgrade at startup.

Alembic itself is imported only when a migration has to run: a process starting on a current schema (every
web and queue worker, most of the time) only reads alembic_version.
"""

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, inspect, text

from service.errors import ConfigurationError

HERE = Path(__file__).resolve().parent
HEAD = "0003"  # the newest revision in versions/ (a test checks that Alembic agrees)


def target_metadata() -> list:
    """Every table the migrations build: the store's models, the SMART tables and the CDS Hooks tables."""
    from service.auth.store import metadata as auth_metadata
    from service.cds.store import metadata as cds_metadata
    from service.store.models import Base

    return [Base.metadata, auth_metadata, cds_metadata]


def alembic_config(engine: Engine | None):  # noqa: ANN201 - an alembic Config
    """An Alembic configuration for our scripts that runs on the given engine (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration, as Alembic reads the scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for a database without our schema)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to revision; concurrent callers on one machine (SQLite) or database (PostgreSQL) queue."""
    with _sqlite_file_lock(engine):
        current = current_revision(engine)
        if revision == "head" and current == HEAD:
            return
        if current is None and inspect(engine).has_table("referrals"):
            raise ConfigurationError(
                f"the database {engine.url.render_as_string(hide_password=True)} was created before migrations "
                "existed; move it aside (or delete it) and start again")
        from alembic import command

        command.upgrade(alembic_config(engine), revision)


def require_current(engine: Engine) -> None:
    """Fail at startup when the schema is not at the newest migration (run `second-opinion db upgrade`)."""
    current = current_revision(engine)
    if current != HEAD:
        raise ConfigurationError(
            f"the database schema is at {current or 'nothing'}, the service needs {HEAD}: "
            "run `second-opinion db upgrade`")


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (PostgreSQL uses an advisory lock in env.py)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
