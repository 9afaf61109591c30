"""Alembic environment: runs the migrations on the engine the caller put in config.attributes["engine"]."""

from alembic import context
from sqlalchemy import text

from service.store.migrations import target_metadata

ADVISORY_LOCK_ID = 7_245_001  # any constant: serialises concurrent `db upgrade` runs on one PostgreSQL database


def run_migrations_online() -> None:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata(), render_as_batch=True,
                          compare_type=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `second-opinion db upgrade`")
run_migrations_online()
