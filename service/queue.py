"""The durable write-back queue (huey): storage chosen by configuration, the task, consumers and the sweeper.

The outbox rows in the database are the source of truth; a queue message only says "look at referral X now".
A lost message (a worker killed after dequeuing it, an enqueue that failed) costs latency, never a consult: the
sweeper re-enqueues every referral with due, unleased write-back work when a consumer starts and periodically.
"""

import logging
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from huey import Huey, PostgresHuey, RedisHuey, SqliteHuey
from huey.api import TaskWrapper
from huey.consumer import Consumer
from sqlalchemy.engine import make_url

from service import writeback
from service.errors import ConfigurationError
from service.store.repository import database_url, get_repository, utcnow

log = logging.getLogger(__name__)

EXTENSION = "second_opinion.queue"
QUEUE_NAME = "second-opinion"
QUEUE_DDL_LOCK = 7_245_002  # PostgreSQL advisory lock held while huey's tables are created


@dataclass
class WritebackQueue:
    """The app's huey instance and its one task: drive a referral's write-back."""

    app: Flask
    huey: Huey
    task: TaskWrapper
    url: str
    consumer: "InProcessConsumer | None" = field(default=None)
    _close_lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(self, referral_id: str, delay_s: float | None = None) -> None:
        """Ask a worker to run the referral's write-back (now, or after delay_s)."""
        if delay_s:
            self.task.schedule((referral_id,), delay=delay_s)
        else:
            self.task(referral_id)

    def close(self) -> None:
        """Close the storage connections this thread holds (huey's close is not safe to race)."""
        with self._close_lock:
            self.huey.storage.close()


def build_huey(url: str) -> Huey:
    """A huey instance for a queue URL: sqlite:///file, postgresql[+psycopg]://…, redis://…"""
    options = {"results": False, "utc": True}
    if url.startswith("sqlite:///"):
        filename = url.removeprefix("sqlite:///")
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=filename, timeout=30, **options)
    if url.startswith(("postgresql", "postgres:")):
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        huey = PostgresHuey(QUEUE_NAME, dsn=dsn, read_timeout=1, create_tables=False, **options)
        _create_postgres_queue_tables(huey, dsn)
        return huey
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(QUEUE_NAME, url=url, **options)
    raise ConfigurationError("QUEUE_URL must be sqlite:///<file>, postgresql+psycopg://… or redis://…")


def _create_postgres_queue_tables(huey: Huey, dsn: str) -> None:
    """huey's own tables, created by one process at a time (concurrent CREATE TABLE IF NOT EXISTS races)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{huey.storage.table_task}",)).fetchone()[0] is not None:
            return
        conn.execute("SELECT pg_advisory_lock(%s)", (QUEUE_DDL_LOCK,))
        huey.storage.initialize_schema()


def default_queue_url(app: Flask) -> str:
    """The database itself when it is PostgreSQL (workers share nothing else); else a SQLite file beside it."""
    db = make_url(database_url(app))
    if db.get_backend_name() == "postgresql":
        return db.render_as_string(hide_password=False)
    if db.database and db.database != ":memory:":
        return f"sqlite:///{Path(db.database).with_suffix('')}.queue.sqlite3"
    return f"sqlite:///{Path(app.instance_path) / 'second-opinion.queue.sqlite3'}"


def init_app(app: Flask) -> None:
    """Create the queue (nothing runs until a consumer is started)."""
    url = app.config.get("QUEUE_URL") or default_queue_url(app)
    huey = build_huey(url)

    def run_writeback(referral_id: str) -> None:
        """Drive one referral's write-back; schedule the next attempt when one is due later."""
        try:
            again = writeback.drive_referral(app, referral_id)
        except Exception as exc:  # the task boundary: retry later, keep the worker alive
            # The type and where it happened, not the message: a validation message can quote patient data.
            log.error("referral %s: write-back run failed unexpectedly (%s); retrying later\n%s", referral_id,
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            again = float(app.config["WRITEBACK_MAX_DELAY_S"])  # a database outage passes; a bug must not spin
        if again is not None:
            task.schedule((referral_id,), delay=again)

    task = huey.task(name="writeback")(run_writeback)
    queue = WritebackQueue(app, huey, task, url)

    @huey.on_shutdown()
    def close_worker_connections() -> None:
        """Each worker thread closes its own storage connections (PostgreSQL LISTEN ones are per thread)."""
        queue.close()
    app.extensions[EXTENSION] = queue


def get_queue(app: Flask) -> WritebackQueue:
    return app.extensions[EXTENSION]


def enqueue_writeback(app: Flask, referral_id: str) -> None:
    """Start a referral's write-back per the WRITEBACK setting: queued (default), inline (tests) or off.

    The outbox rows were committed before this is called: if the enqueue fails, the sweeper finds them.
    """
    mode = app.config["WRITEBACK"]
    if mode == "inline":
        writeback.drive_referral(app, referral_id)
    elif mode == "queue":
        try:
            get_queue(app).enqueue(referral_id)
        except Exception:  # noqa: BLE001 - the consult is stored; the sweeper will enqueue it
            log.warning("referral %s: could not enqueue the write-back; the sweeper will", referral_id, exc_info=True)


def resume_writeback(app: Flask, referral_id: str, *, actor: str) -> None:
    """failed → in-progress and the write-back queued again (the API's retry and `second-opinion retry`)."""
    repo = get_repository(app)
    profile = writeback.profile_for(app, repo.get(referral_id).ehr_base_url)
    repo.resume(referral_id, actor=actor, reason="write-back resumed",
                               mirror_profile=profile.name if profile.task_writes else None)
    enqueue_writeback(app, referral_id)


def sweep(app: Flask) -> int:
    """Enqueue every referral whose write-back is due and not leased (after crashes, lost messages, restarts)."""
    referral_ids = get_repository(app).due_referrals(utcnow())
    queue = get_queue(app)
    for referral_id in referral_ids:
        queue.enqueue(referral_id)
    if referral_ids:
        log.info("sweeper re-enqueued %d referral(s) with due write-back", len(referral_ids))
    return len(referral_ids)


class Sweeper:
    """A daemon thread that sweeps at start and then every WRITEBACK_SWEEP_S seconds."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.interval = float(app.config["WRITEBACK_SWEEP_S"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="writeback-sweeper", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            try:
                sweep(self.app)
            except Exception:  # noqa: BLE001 - the database may be briefly unavailable; sweep again later
                log.warning("write-back sweep failed; will sweep again", exc_info=True)
            if self._stop.wait(self.interval):
                return


class _QuietConsumer(Consumer):
    """huey's consumer without signal handlers (it may run in a thread of a web server or a test)."""

    def _set_signal_handlers(self) -> None:
        pass


def consumer_options(app: Flask, threads: int) -> dict:
    poll = float(app.config["QUEUE_POLL_S"])
    return {"workers": threads, "worker_type": "thread", "periodic": False, "initial_delay": min(0.05, poll),
            "backoff": 1.5, "max_delay": poll, "scheduler_interval": 1, "check_worker_health": True,
            "health_check_interval": 5}


class InProcessConsumer:
    """huey worker threads and the sweeper inside this process (serve, demo, tests)."""

    def __init__(self, app: Flask, threads: int | None = None) -> None:
        self.app = app
        threads = threads or int(app.config["QUEUE_WORKERS"])
        self.consumer = _QuietConsumer(get_queue(app).huey, **consumer_options(app, threads))
        self.sweeper = Sweeper(app)

    def start(self) -> "InProcessConsumer":
        self.consumer.start()
        self.sweeper.start()
        return self

    def stop(self) -> None:
        self.sweeper.stop()
        self.consumer.stop(graceful=True)


def start_consumer(app: Flask, threads: int | None = None) -> InProcessConsumer:
    """Run write-back in this process; stop_consumer(app) ends it."""
    queue = get_queue(app)
    if queue.consumer is None:
        queue.consumer = InProcessConsumer(app, threads).start()
    return queue.consumer


def stop_consumer(app: Flask) -> None:
    """Stop the in-process consumer (waiting for running write-backs), and close the queue's connections."""
    queue = app.extensions.get(EXTENSION)
    if queue is None:
        return
    if queue.consumer is not None:
        queue.consumer.stop()
        queue.consumer = None
    queue.close()


def run_worker(app: Flask, threads: int) -> None:
    """The `second-opinion worker` process: a consumer in the foreground until SIGINT/SIGTERM, plus the sweeper."""
    queue = get_queue(app)
    log.info("write-back worker: %d thread(s), queue %s", threads, make_url(queue.url).render_as_string())
    sweeper = Sweeper(app).start()
    try:
        Consumer(queue.huey, **consumer_options(app, threads)).run()
    finally:
        sweeper.stop()
        queue.close()
