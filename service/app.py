"""The dashboard: a Flask app factory, one blueprint per area.

    app = create_app({"STORE": Store("sqlite://"), "TOKEN": "secret"})
    app.run()                                   # `vmroc serve` runs it next to the worker

Config (defaults, then ``VMROC_FLASK_*`` environment variables, then ``config``):
``STORE`` (a ``service.store.Store``; else ``DATABASE``, a URL, default SQLite under the
vmroc home), ``TOKEN`` (write actions; ``VMROC_TOKEN`` or generated), ``STATUS`` (the
worker's ``service.worker.Status``; None: a dashboard without a worker), ``LAB`` (what the
actions act on), ``HEAL`` and ``START_CAMPAIGN`` (the actions themselves, replaceable in
tests), ``STALE_S`` (a guest without a sample for this long is stale in /healthz).

Blueprints: ``pages`` (HTML), ``api`` (the JSON twins under /api/), ``auth`` (login and
the write actions, token and CSRF checked), ``health`` (/healthz, /metrics).
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from flask import Flask, jsonify, render_template, request

__all__ = ["create_app"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=secrets.token_hex(16),
        TOKEN=os.environ.get("VMROC_TOKEN") or None,
        STORE=None, DATABASE=None, STATUS=None,
        LAB=os.environ.get("VMROC_LAB", "default"),
        HEAL=None, START_CAMPAIGN=None, STALE_S=30.0,
        SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
        JSON_SORT_KEYS=False,
    )
    app.config.from_prefixed_env("VMROC_FLASK")
    if config:
        app.config.update(config)
    if not app.config["TOKEN"]:
        app.config["TOKEN"] = secrets.token_urlsafe(18)
    if app.config["STORE"] is None:
        from .store import Store
        app.config["STORE"] = Store(app.config["DATABASE"])
    if app.config["HEAL"] is None:
        app.config["HEAL"] = _heal(app.config["LAB"])
    if app.config["START_CAMPAIGN"] is None:
        app.config["START_CAMPAIGN"] = CampaignStarter(app.config["LAB"])

    from .blueprints import api, auth, health, pages
    for bp in (pages.bp, api.bp, auth.bp, health.bp):
        app.register_blueprint(bp)
    app.jinja_env.filters["when"] = _when
    app.jinja_env.filters["secs"] = _secs

    @app.context_processor
    def _globals():
        from .blueprints.auth import csrf_token, logged_in
        return {"csrf_token": csrf_token, "logged_in": logged_in}

    def _error(code: int, message: str):
        if request.path.startswith("/api/"):
            return jsonify({"error": message}), code
        return render_template("error.html", code=code, message=message), code

    for code in (400, 401, 404, 405, 409):
        app.register_error_handler(code, lambda e, c=code: _error(
            c, getattr(e, "description", None) or str(e)))

    from .store import StoreError

    @app.errorhandler(StoreError)
    def _store_error(exc):
        return _error(503, f"StoreError: {exc}")
    return app


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    fmt = "%H:%M:%S" if abs(time.time() - ts) < 86400 else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, time.localtime(ts))


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _heal(lab: str):
    def heal() -> list[dict]:
        from vmroc.inject import Ledger
        from vmroc.inject import heal as heal_faults
        ledger = Ledger()
        try:
            return heal_faults(lab=lab, all=True, ledger=ledger)
        finally:
            ledger.close()
    return heal


def shipped_campaigns() -> dict[str, str]:
    """Name -> path of the campaign files shipped with vmroc (deploy/campaigns)."""
    from pathlib import Path

    import vmroc.deploy
    folder = Path(vmroc.deploy.__file__).parent / "campaigns"
    return {p.stem: str(p) for p in sorted(folder.glob("*.yaml"))}


class CampaignStarter:
    """Starts one shipped campaign at a time as `vmroc campaign run` (a child process)."""

    def __init__(self, lab: str):
        self.lab = lab
        self.proc = None
        self.name: str | None = None

    def running(self) -> str | None:
        if self.proc is not None and self.proc.poll() is None:
            return self.name
        return None

    def __call__(self, name: str) -> dict[str, Any]:
        import subprocess
        import sys

        from vmroc.home import subdir
        if self.running():
            raise RuntimeError(f"campaign {self.name} is still running (pid {self.proc.pid})")
        path = shipped_campaigns()[name]
        logfile = subdir("service") / f"campaign-{name}-{int(time.time())}.log"
        with open(logfile, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vmroc.cli", "campaign", "run", path, "--lab",
                 self.lab], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.name = name
        return {"campaign": name, "file": path, "lab": self.lab, "pid": self.proc.pid,
                "log": str(logfile)}
