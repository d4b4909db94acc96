"""/healthz (JSON; 503 when the service cannot do its job) and /metrics (Prometheus)."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


def health() -> tuple[dict, bool]:
    from ..store import StoreError
    cfg = current_app.config
    status, store = cfg["STATUS"], cfg["STORE"]
    now = time.time()
    out: dict = {"store": {"ok": True, "url": store._where()}}
    problems = []
    try:
        store.ping()
        guests = store.guests()
    except StoreError as exc:
        out["store"] = {"ok": False, "error": str(exc)}
        problems.append("store unreadable")
        guests = []
    out["guests"] = {g["name"]: {"last_sample_age_s": round(now - g["seen"], 1),
                                 "stale": now - g["seen"] > cfg["STALE_S"]} for g in guests}
    if status is None:
        out["worker"] = {"running": False, "note": "dashboard only: no worker in this process"}
    else:
        out["worker"] = {"running": status.running, "error": status.error,
                         "paused": status.paused, "partitions": status.assigned,
                         "last_poll_age_s": round(now - status.last_poll, 1)
                         if status.last_poll else None}
        out["broker"] = {"ok": status.broker_ok, "error": status.broker_error}
        out["lag"] = {f"{t}/{p}": n for (t, p), n in sorted(status.lag.items())}
        if not status.store_ok:
            out["store"] = {"ok": False, "error": status.store_error,
                            "note": "consumption paused until the store takes the batch"}
            problems.append("store refuses writes")
        if not status.running:
            problems.append("worker not running" + (f": {status.error}" if status.error else ""))
        if not status.broker_ok:
            problems.append("broker unreachable")
    out["ok"] = not problems
    out["problems"] = problems
    return out, not problems


@bp.get("/healthz")
def healthz():
    body, ok = health()
    return jsonify(body), 200 if ok else 503


@bp.get("/metrics")
def metrics():
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    registry = current_app.extensions.get("vmroc_registry")
    if registry is None:
        registry = current_app.extensions["vmroc_registry"] = _registry(current_app)
    registry.collector.drain()
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _registry(app):
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    rca = Histogram("vmroc_rca_seconds", "Time to rank the causes of one incident",
                    buckets=(.001, .005, .01, .05, .1, .5, 1, 5), registry=registry)
    store_s = Histogram("vmroc_store_write_seconds", "Time to store one batch",
                        buckets=(.001, .005, .01, .05, .1, .5, 1, 5), registry=registry)
    registry.collector = _Collector(app, rca, store_s)
    registry.register(registry.collector)
    return registry


class _Collector:
    """Reads the worker's status and the store when scraped."""

    def __init__(self, app, rca, store_s):
        self.app, self.rca, self.store_s = app, rca, store_s

    def describe(self):
        return []

    def drain(self) -> None:
        """Move the worker's timings since the last scrape into the histograms."""
        status = self.app.config["STATUS"]
        if status is None:
            return
        while status.rca_ms:
            self.rca.observe(status.rca_ms.popleft() / 1000)
        while status.store_ms:
            self.store_s.observe(status.store_ms.popleft() / 1000)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from ..store import StoreError
        status, store = self.app.config["STATUS"], self.app.config["STORE"]
        consumed = CounterMetricFamily("vmroc_events_consumed", "Events read from the bus",
                                       labels=["topic"])
        lag = GaugeMetricFamily("vmroc_consumer_lag", "Messages behind the partition end",
                                labels=["topic", "partition"])
        if status is not None:
            for topic, n in sorted(status.consumed.items()):
                consumed.add_metric([topic], n)
            for (topic, part), n in sorted(status.lag.items()):
                lag.add_metric([topic, str(part)], n)
        yield consumed
        yield lag
        for name, doc, attr in (
                ("vmroc_anomalies", "Anomalies raised by this service", "anomalies"),
                ("vmroc_incidents", "Incidents ranked by this service", "incidents"),
                ("vmroc_dlq_messages", "Undecodable messages sent to vmroc.dlq", "dead"),
                ("vmroc_store_writes", "Batches stored", "store_writes")):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], getattr(status, attr) if status is not None else 0)
            yield c
        up = GaugeMetricFamily("vmroc_worker_up", "1 while the worker consumes")
        up.add_metric([], 1 if status is not None and status.running and not status.paused
                      else 0)
        yield up
        try:
            counts = store.counts()
            guests = store.guests()
        except StoreError:
            counts, guests = {}, []
        stored = GaugeMetricFamily("vmroc_stored_rows", "Rows in the store", labels=["table"])
        for table, n in sorted(counts.items()):
            stored.add_metric([table], n)
        yield stored
        age = GaugeMetricFamily("vmroc_last_sample_age_seconds",
                                "Wall-clock seconds since a guest's last sample was stored",
                                labels=["guest"])
        now = time.time()
        for g in guests:
            age.add_metric([g["name"]], round(now - g["seen"], 3))
        yield age
