"""Run the service's WSGI app with waitress, blocking or in a background thread."""

import logging
import threading

from flask import Flask
from waitress.server import create_server

log = logging.getLogger(__name__)


class ServiceServer:
    """The service on 127.0.0.1 (or another host) in a daemon thread; port 0 picks a free port."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> None:
        self.app = app
        self._server = create_server(app, host=host, port=port, threads=threads, ident="second-opinion")
        self.url = f"http://{host}:{self._server.effective_port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "ServiceServer":
        self._thread = threading.Thread(target=self._server.run, name="service-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        from service.queue import stop_consumer

        self._server.close()
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
