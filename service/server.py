"""The service in one process: the worker thread and the dashboard's HTTP server.

    svc = Service.start(store, host="127.0.0.1", port=8080, worker_options={...})
    svc.url, svc.token, svc.status
    svc.stop()

``vmroc serve`` and ``vmroc demo`` both run one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from vmroc.errors import VmrocError

from .store import Store
from .worker import Status, Worker

log = logging.getLogger(__name__)


@dataclass
class Service:
    store: Store
    app: Any
    server: Any
    stop_event: threading.Event
    status: Status | None = None
    worker: Worker | None = None
    threads: tuple[threading.Thread, ...] = ()

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.server_port}/"

    @property
    def token(self) -> str:
        return self.app.config["TOKEN"]

    @classmethod
    def start(cls, store: Store, *, host: str = "127.0.0.1", port: int = 8080,
              lab: str = "default", worker_options: dict[str, Any] | None = None,
              stop: threading.Event | None = None, app_config: dict | None = None
              ) -> "Service":
        """Start the worker (unless ``worker_options`` is None) and the HTTP server."""
        from werkzeug.serving import make_server

        from .app import create_app
        stop = stop or threading.Event()
        status = worker = None
        threads = []
        if worker_options is not None:
            status = Status()
            worker = Worker(store, status=status, **worker_options)

            def work() -> None:
                try:
                    worker.run(stop)
                except Exception:  # noqa: BLE001 - in status.error: /healthz says 503
                    pass
            threads.append(threading.Thread(target=work, name="vmroc-serve-worker",
                                            daemon=True))
        app = create_app({"STORE": store, "STATUS": status, "LAB": lab, **(app_config or {})})
        try:
            server = make_server(host, port, app, threaded=True)
        except OSError as exc:
            raise VmrocError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        threads.append(threading.Thread(target=server.serve_forever, name="vmroc-serve-http",
                                        daemon=True))
        for t in threads:
            t.start()
        return cls(store, app, server, stop, status, worker, tuple(threads))

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        for t in self.threads:
            t.join(timeout=30)
