"""Run the service's WSGI app: waitress for `serve`, a werkzeug server thread for the demo and tests."""

import gc
import logging
import sys
import threading

from flask import Flask
from waitress.server import create_server
from werkzeug.serving import WSGIRequestHandler, make_server

log = logging.getLogger(__name__)


SWITCH_INTERVAL_S = 0.0005  # how long a thread may hold the GIL while another waits (Python's default: 5 ms)


def settle_process() -> None:
    """Call once in a serving process, after the app is made: keep what startup built out of the collector's walks,
    and hand the GIL over sooner.

    Importing the FHIR models builds hundreds of thousands of long-lived objects (classes, validators, schemas).
    Python's full (generation 2) collections walk every tracked object, so while a referral allocates its models
    each such collection also walked all of those again (about 0.15 s each, during a packet build).
    `gc.freeze()` moves what exists now into the permanent generation, which collections skip
    (docs.python.org/3/library/gc.html#gc.freeze); garbage made later is collected as before.

    A fetch validates pages in some threads while others wait for the EHR's answers. A thread whose answer has
    arrived needs the GIL several times to read it and send the next request, and with the default switch interval
    it waited up to 5 ms each time: at 50 ms of EHR latency its requests took 55-120 ms. At 0.5 ms they take 54-65
    (docs.python.org/3/library/sys.html#sys.setswitchinterval; bench/fetch.py).
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)


class QuietRequestHandler(WSGIRequestHandler):
    """No access log: request lines can carry identifiers (ids in paths, search parameters)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ServiceServer:
    """The service on 127.0.0.1 (or another host) in a daemon thread; port 0 picks a free port.

    It uses werkzeug's threaded server, which stops cleanly from another thread (waitress, used by
    `second-opinion serve`, raises "Bad file descriptor" in its loop when closed that way).
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> None:
        self.app = app
        self._server = make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "ServiceServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="service-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        from service.queue import stop_consumer

        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        stop_consumer(self.app)  # the in-process write-back consumer, if one was started

    def __enter__(self) -> "ServiceServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(app: Flask, host: str, port: int, threads: int = 8) -> None:
    """Serve until interrupted."""
    server = create_server(app, host=host, port=port, threads=threads, ident="second-opinion")
    log.info("serving on http://%s:%s", host, server.effective_port)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
