"""Alembic migrations for the store: `second-opinion db upgrade`, and the SQLite auto-upgrade at startup."""

import fcntl
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from service.errors import ConfigurationError

HERE = Path(__file__).resolve().parent


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration for our scripts that runs on the given engine (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration."""
    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()  # type: ignore[arg-type]


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for a database without our schema)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to revision; concurrent callers on one machine (SQLite) or database (PostgreSQL) queue."""
    with _sqlite_file_lock(engine):
        if current_revision(engine) is None and "referrals" in inspect(engine).get_table_names():
            raise ConfigurationError(
                f"the database {engine.url.render_as_string(hide_password=True)} was created before migrations "
                "existed; move it aside (or delete it) and start again")
        command.upgrade(alembic_config(engine), revision)


def require_current(engine: Engine) -> None:
    """Fail at startup when the schema is not at the newest migration (run `second-opinion db upgrade`)."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise ConfigurationError(
            f"the database schema is at {current or 'nothing'}, the service needs {head}: "
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
