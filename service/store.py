"""The service's store: guests, their feature history, kernel log lines, anomalies,
incidents with ranked causes, the fault ledger, and the worker's checkpoint.

    store = Store()                          # SQLite (WAL) at $VMROC_HOME/service/vmroc.db
    store = Store("postgresql://...")        # or any SQLite/PostgreSQL URL (SQLAlchemy 2)
    store.write(batch)                       # one transaction: events + checkpoint
    store.incidents(limit=50), store.incident(id), store.timeline("g1", since=t)

Writes are idempotent by event id: a sample by (guest, ts), a log line by (guest, ts,
index), an anomaly by (guest, ts, onset, detector), an incident by its id, a ledger
entry by (fault id, phase). Writing the same batch twice changes nothing, so a worker
that crashed between storing and committing its Kafka offsets reads the events again
and stores nothing twice. The worker's state (detector baselines, open incident) is
saved in the same transaction as the events it produced.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from vmroc.errors import VmrocError
from vmroc.events import Anomaly, Cause, FaultEvent, Incident, from_dict, to_dict
from vmroc.home import subdir

__all__ = ["Store", "Batch", "StoreError", "OwnerError", "default_url", "anomaly_id"]

log = logging.getLogger(__name__)

metadata = MetaData()
guests = Table(
    "guests", metadata,
    Column("name", String(64), primary_key=True),
    Column("first_ts", Float, nullable=False),
    Column("last_ts", Float, nullable=False),          # newest sample (stream time)
    Column("samples", Integer, nullable=False),
    Column("seen", Float, nullable=False),             # wall clock when it was stored
)
history = Table(   # featurized values, one row per guest per `history_s` (downsampled)
    "history", metadata,
    Column("guest", String(64), primary_key=True),
    Column("ts", Float, primary_key=True),
    Column("vals", JSON, nullable=False),              # feature -> value (zeros left out)
)
logs = Table(
    "logs", metadata,
    Column("guest", String(64), primary_key=True),
    Column("ts", Float, primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("line", Text, nullable=False),
)
anomalies = Table(
    "anomalies", metadata,
    Column("id", String(24), primary_key=True),
    Column("guest", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("onset", Float, nullable=False),
    Column("detector", String(32), nullable=False),
    Column("score", Float, nullable=False),
    Column("body", JSON, nullable=False),
    Index("anomalies_onset", "onset"),
)
incidents = Table(
    "incidents", metadata,
    Column("id", String(64), primary_key=True),
    Column("ts", Float, nullable=False),               # last anomaly's confirmation
    Column("onset", Float, nullable=False),            # first anomaly's onset
    Column("guests", String(255), nullable=False),     # comma-separated
    Column("rank1", String(96)),
    Column("rank1_score", Float),
    Column("rca_ms", Float),
    Column("ranking", JSON, nullable=False),           # cause components, rank order
    Column("members", JSON, nullable=False),           # its anomalies: guest, ts, onset, detector
    Column("body", JSON, nullable=False),              # the Incident event
    Index("incidents_ts", "ts"),
)
ledger = Table(
    "ledger", metadata,
    Column("fault_id", String(96), primary_key=True),
    Column("phase", String(24), primary_key=True),
    Column("ts", Float, nullable=False),
    Column("kind", String(48), nullable=False),
    Column("campaign", String(96)),
    Column("body", JSON, nullable=False),
    Index("ledger_ts", "ts"),
)
state = Table(
    "state", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("updated", Float, nullable=False),
)

FAULT_LOOKBACK_S = 3600.0
OWNER_KEY = "owner"   # a fault window is looked for this far before an incident


class StoreError(VmrocError):
    """The database cannot be opened, read or written (locked, full, unreachable)."""


class OwnerError(VmrocError):
    """Another worker took the store over (two `vmroc serve` on one database)."""


def default_url() -> str:
    return f"sqlite:///{subdir('service') / 'vmroc.db'}"


def anomaly_id(a: Anomaly) -> str:
    """An anomaly's id: the same for every copy (as ``rca.scorecard`` matches them)."""
    key = f"{a.guest}|{a.ts!r}|{a.onset!r}|{a.detector}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


@dataclass
class Batch:
    """What one commit of the worker stores, in one transaction."""

    history: list[dict[str, Any]] = field(default_factory=list)   # guest, ts, values
    logs: list[dict[str, Any]] = field(default_factory=list)      # guest, ts, n, line
    guests: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> first, last, n
    anomalies: list[Anomaly] = field(default_factory=list)
    incidents: list[tuple[Incident, float | None]] = field(default_factory=list)  # + rca ms
    faults: list[FaultEvent] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return (sum(g["n"] for g in self.guests.values()) + len(self.history)
                + len(self.logs) + len(self.anomalies) + len(self.incidents) + len(self.faults))

    def extend(self, other: "Batch") -> None:
        self.history += other.history
        self.logs += other.logs
        for name, g in other.guests.items():
            mine = self.guests.get(name)
            self.guests[name] = g if mine is None else {
                "first": min(mine["first"], g["first"]), "last": max(mine["last"], g["last"]),
                "n": mine["n"] + g["n"]}
        self.anomalies += other.anomalies
        self.incidents += other.incidents
        self.faults += other.faults
        self.state.update(other.state)


class Store:
    """The service's database (see the module docstring)."""

    def __init__(self, url: str | None = None, *, echo: bool = False):
        self.url = url or default_url()
        if self.url.startswith(("postgresql://", "postgres://")):   # the driver vmroc ships
            self.url = "postgresql+psycopg://" + self.url.split("://", 1)[1]
        try:
            self.engine = create_engine(self.url, echo=echo, future=True)
        except ImportError as exc:
            hint = " (pip install 'vmroc[postgres]')" if "psycopg" in str(exc) else ""
            raise StoreError(f"cannot use database {self.url!r}: {exc}{hint}") from exc
        except (SQLAlchemyError, ValueError) as exc:
            raise StoreError(f"cannot use database {self.url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            if self.url.rstrip("/").endswith(":memory:") or self.url == "sqlite://":
                from sqlalchemy.pool import StaticPool  # one connection: one memory database
                self.engine = create_engine(self.url, echo=echo, poolclass=StaticPool,
                                            connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif self.dialect != "postgresql":
            raise StoreError(f"database {self.dialect!r} is not supported: use a sqlite:// or "
                             "postgresql:// URL")
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {self.url}: {_short(exc)}") from exc

    # -- writing -----------------------------------------------------------------------
    def claim(self, owner: str) -> None:
        """Make ``owner`` the one worker that writes here (a worker started later takes
        over; the earlier one's next ``write(owner=...)`` fails)."""
        self.write(Batch(state={OWNER_KEY: owner.encode()}))

    def write(self, batch: Batch, owner: str | None = None) -> None:
        """Store ``batch`` in one transaction (idempotent; raises StoreError, and
        OwnerError if ``owner`` is no longer the store's worker)."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                if owner is not None:
                    current = conn.execute(select(state.c.value).where(
                        state.c.key == OWNER_KEY)).scalar()
                    if current is not None and current.decode() != owner:
                        raise OwnerError(f"another vmroc serve ({current.decode()}) writes to "
                                         f"{self._where()} now; this one ({owner}) stops")
                if batch.history:
                    conn.execute(self._ignore(history), batch.history)
                if batch.logs:
                    conn.execute(self._ignore(logs), batch.logs)
                if batch.anomalies:
                    conn.execute(self._ignore(anomalies), [
                        {"id": anomaly_id(a), "guest": a.guest, "ts": a.ts,
                         "onset": a.onset if a.onset is not None else a.ts,
                         "detector": a.detector, "score": a.score,
                         "body": to_dict(a, header=False)} for a in batch.anomalies])
                if batch.incidents:
                    conn.execute(self._ignore(incidents), [_incident_row(i, ms)
                                                           for i, ms in batch.incidents])
                if batch.faults:
                    conn.execute(self._ignore(ledger), [
                        {"fault_id": f.fault_id, "phase": f.phase, "ts": f.ts, "kind": f.kind,
                         "campaign": f.campaign, "body": to_dict(f)} for f in batch.faults])
                for name, g in batch.guests.items():
                    stmt = self._insert(guests).values(
                        name=name, first_ts=g["first"], last_ts=g["last"], samples=g["n"],
                        seen=now)
                    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={
                        "first_ts": func.min(guests.c.first_ts, stmt.excluded.first_ts),
                        "last_ts": func.max(guests.c.last_ts, stmt.excluded.last_ts),
                        "samples": guests.c.samples + stmt.excluded.samples,
                        "seen": stmt.excluded.seen}) if self.dialect == "sqlite" else
                        stmt.on_conflict_do_update(index_elements=["name"], set_={
                            "first_ts": func.least(guests.c.first_ts, stmt.excluded.first_ts),
                            "last_ts": func.greatest(guests.c.last_ts, stmt.excluded.last_ts),
                            "samples": guests.c.samples + stmt.excluded.samples,
                            "seen": stmt.excluded.seen}))
                for key, value in batch.state.items():
                    stmt = self._insert(state).values(key=key, value=value, updated=now)
                    conn.execute(stmt.on_conflict_do_update(
                        index_elements=["key"], set_={"value": stmt.excluded.value,
                                                      "updated": stmt.excluded.updated}))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self._where()}: {_short(exc)}") from exc

    def load_state(self, key: str) -> bytes | None:
        with self._read() as conn:
            return conn.execute(select(state.c.value).where(state.c.key == key)).scalar()

    def prune(self, before: float) -> int:
        """Drop feature history and log lines older than ``before`` (stream time)."""
        with self.engine.begin() as conn:
            n = conn.execute(history.delete().where(history.c.ts < before)).rowcount
            n += conn.execute(logs.delete().where(logs.c.ts < before)).rowcount
        return n

    # -- reading -----------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                    for t in (guests, anomalies, incidents, ledger, history)}

    def incidents(self, limit: int = 50, before: float | None = None,
                  guest: str | None = None) -> list[dict[str, Any]]:
        """Incident rows, newest first (``before``: older than that ``ts``)."""
        q = select(incidents.c.id, incidents.c.ts, incidents.c.onset, incidents.c.guests,
                   incidents.c.rank1, incidents.c.rank1_score, incidents.c.rca_ms)
        if before is not None:
            q = q.where(incidents.c.ts < before)
        if guest is not None:
            q = q.where(incidents.c.guests.like(f"%{guest}%"))
        q = q.order_by(incidents.c.ts.desc()).limit(limit)
        with self._read() as conn:
            return [dict(r._mapping, guests=r.guests.split(",")) for r in conn.execute(q)]

    def incident_events(self, ids: Iterable[str]) -> dict[str, Incident]:
        ids = list(ids)
        with self._read() as conn:
            rows = conn.execute(select(incidents.c.id, incidents.c.body, incidents.c.rca_ms)
                                .where(incidents.c.id.in_(ids))).all() if ids else []
        return {r.id: from_dict(Incident, r.body) for r in rows}

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).first()
        if row is None:
            return None
        return {"event": from_dict(Incident, row.body), "rca_ms": row.rca_ms}

    def guests(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(r._mapping) for r in
                    conn.execute(select(guests).order_by(guests.c.name))]

    def span(self) -> tuple[float, float] | None:
        """First and last sample time over every guest (stream time)."""
        with self._read() as conn:
            row = conn.execute(select(func.min(guests.c.first_ts),
                                      func.max(guests.c.last_ts))).first()
        return (row[0], row[1]) if row and row[0] is not None else None

    def history(self, guest: str, start: float, end: float,
                features: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """``{"ts", "values"}`` rows of ``guest`` with ``start <= ts <= end``."""
        keep = set(features) if features is not None else None
        with self._read() as conn:
            rows = conn.execute(select(history.c.ts, history.c.vals)
                                .where(history.c.guest == guest, history.c.ts >= start,
                                       history.c.ts <= end).order_by(history.c.ts)).all()
        return [{"ts": r.ts, "values": r.vals if keep is None else
                 {k: v for k, v in r.vals.items() if k in keep}} for r in rows]

    def logs(self, guests_: Iterable[str], start: float, end: float) -> list[dict[str, Any]]:
        names = list(guests_)
        with self._read() as conn:
            rows = conn.execute(select(logs).where(logs.c.guest.in_(names), logs.c.ts >= start,
                                                   logs.c.ts <= end)
                                .order_by(logs.c.ts, logs.c.n).limit(500)).all()
        return [dict(r._mapping) for r in rows]

    def anomalies(self, start: float, end: float, guest: str | None = None,
                  light: bool = False) -> list[Anomaly]:
        """Anomalies with onset in [start, end]; ``light``: only what matching reads
        (guest, ts, onset, detector, score), fast (for scoring many)."""
        cols = (anomalies.c.guest, anomalies.c.ts, anomalies.c.onset, anomalies.c.detector,
                anomalies.c.score) if light else (anomalies.c.body,)
        q = select(*cols).where(anomalies.c.onset >= start, anomalies.c.onset <= end)
        if guest is not None:
            q = q.where(anomalies.c.guest == guest)
        with self._read() as conn:
            rows = conn.execute(q.order_by(anomalies.c.onset)).all()
        if light:
            return [_light(Anomaly, guest=r.guest, ts=r.ts, onset=r.onset, detector=r.detector,
                           score=r.score, features=[], deviations={}) for r in rows]
        return [from_dict(Anomaly, r.body, nested=True) for r in rows]

    def incidents_between(self, start: float, end: float, light: bool = False
                          ) -> list[Incident]:
        """Incidents whose span [onset, ts] meets [start, end]; ``light``: only what
        matching reads (id, ts, guests, the anomalies' keys, the ranked components)."""
        cols = (incidents.c.id, incidents.c.ts, incidents.c.guests, incidents.c.ranking,
                incidents.c.members) if light else (incidents.c.body,)
        with self._read() as conn:
            rows = conn.execute(select(*cols).where(
                incidents.c.ts >= start, incidents.c.onset <= end)
                .order_by(incidents.c.ts)).all()
        if not light:
            return [from_dict(Incident, r.body) for r in rows]
        return [_light(Incident, id=r.id, ts=r.ts, guests=r.guests.split(","),
                       anomalies=[_light(Anomaly, guest=g, ts=ts, onset=onset, detector=d,
                                         score=0.0, features=[], deviations={})
                                  for g, ts, onset, d in r.members],
                       causes=[_light(Cause, component=c, score=0.0, evidence=None)
                               for c in r.ranking]) for r in rows]

    def fault_events(self, start: float | None = None, end: float | None = None,
                     campaign: str | None = None, last: int | None = None
                     ) -> list[FaultEvent]:
        """Every ledger entry of the faults injected in [start - FAULT_LOOKBACK_S, end]
        (all of them without bounds; the ``last`` ones injected), in time order."""
        inj = select(ledger.c.fault_id).where(ledger.c.phase == "injected")
        if start is not None:
            inj = inj.where(ledger.c.ts >= start - FAULT_LOOKBACK_S)
        if end is not None:
            inj = inj.where(ledger.c.ts <= end)
        if campaign is not None:
            inj = inj.where(ledger.c.campaign == campaign)
        if last is not None:
            inj = inj.order_by(ledger.c.ts.desc()).limit(last)
        q = select(ledger.c.body).where(ledger.c.fault_id.in_(inj)).order_by(ledger.c.ts)
        with self._read() as conn:
            return [_light(FaultEvent, **{k: v for k, v in r.body.items()
                                          if k not in ("schema", "v")})
                    for r in conn.execute(q)]

    def ledger_rows(self) -> list[tuple[str, str, float]]:
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(
                select(ledger.c.fault_id, ledger.c.phase, ledger.c.ts).order_by(ledger.c.ts))]

    def campaigns(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(
                select(ledger.c.campaign).where(ledger.c.campaign.is_not(None))
                .group_by(ledger.c.campaign).order_by(func.min(ledger.c.ts).desc()))]

    def version(self) -> tuple:
        """Changes whenever an incident, an anomaly or a ledger entry is added (for caches
        of what is computed from them)."""
        with self._read() as conn:
            return tuple(conn.execute(select(func.count(), func.max(t.c.ts)).select_from(t)
                                      ).first() for t in (incidents, anomalies, ledger))

    def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        with self._read() as conn:
            conn.execute(select(1))

    # -- internals ---------------------------------------------------------------------
    def _insert(self, table: Table):
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def _ignore(self, table: Table):
        return self._insert(table).on_conflict_do_nothing()

    @contextmanager
    def _read(self):
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {self._where()}: {_short(exc)}") from exc

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)


def _incident_row(i: Incident, rca_ms: float | None) -> dict[str, Any]:
    first = min((a.onset if a.onset is not None else a.ts) for a in i.anomalies) \
        if i.anomalies else i.ts
    top = i.causes[0] if i.causes else None
    return {"id": i.id, "ts": i.ts, "onset": first, "guests": ",".join(i.guests),
            "rank1": top.component if top else None, "rank1_score": top.score if top else None,
            "rca_ms": rca_ms, "body": to_dict(i),
            "ranking": [c.component for c in i.causes],
            "members": [[a.guest, a.ts, a.onset, a.detector] for a in i.anomalies]}


def _light(cls, **fields):
    """An event rebuilt from the store without validating it again (it was validated
    when it was stored): reading thousands for a scorecard stays fast."""
    obj = cls.__new__(cls)
    obj.__dict__.update(_defaults(cls), **fields)
    return obj


@functools.cache
def _defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200]

