"""Who may act: write actions need the service's token. API clients send it as
``Authorization: Bearer TOKEN``; a browser logs in once with it (a signed session
cookie, SameSite=Strict) and every form carries the session's CSRF token."""

from __future__ import annotations

import functools
import hmac
import secrets

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

bp = Blueprint("auth", __name__)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(18)
    return session["csrf"]


def logged_in() -> bool:
    return bool(session.get("auth"))


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def _bearer() -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and _same(token.strip(), current_app.config["TOKEN"])


def _csrf_ok() -> bool:
    sent = request.form.get("csrf") or request.headers.get("X-CSRF-Token")
    return _same(sent, session.get("csrf"))


def require_write(view):
    """401 unless the bearer token is sent, or a logged-in session sends its CSRF token."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if _bearer() or (logged_in() and _csrf_ok()):
            return view(*args, **kwargs)
        abort(401, "this action needs the service token: send `Authorization: Bearer TOKEN` "
                   "(printed by `vmroc serve`, or $VMROC_TOKEN), or log in")
    return wrapped


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = request.values.get("next") or url_for("pages.incidents")
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("pages.incidents")
    if request.method == "POST":
        if not _csrf_ok():
            abort(400, "the form expired (CSRF token missing or wrong): reload and retry")
        if not _same(request.form.get("token", "").strip(), current_app.config["TOKEN"]):
            return render_template("login.html", next=target, failed=True), 401
        session.clear()
        session["auth"] = True
        csrf_token()
        return redirect(target)
    return render_template("login.html", next=target, failed=False)


@bp.post("/logout")
def logout():
    if _csrf_ok():
        session.clear()
    return redirect(url_for("pages.incidents"))


@bp.post("/actions/heal")
@require_write
def heal():
    done = current_app.config["HEAL"]()
    ok = sum(1 for d in done if d.get("healed"))
    flash(f"healed {ok} fault(s)" + (f", {len(done) - ok} failed" if len(done) > ok else "")
          if done else "no fault left to heal")
    return redirect(url_for("pages.faults"))


@bp.post("/actions/campaign")
@require_write
def campaign():
    from ..app import shipped_campaigns
    name = request.form.get("name", "")
    if name not in shipped_campaigns():
        abort(400, f"unknown campaign {name!r}")
    try:
        started = current_app.config["START_CAMPAIGN"](name)
    except RuntimeError as exc:
        abort(409, str(exc))
    flash(f"campaign {name} started on lab {started.get('lab')} (pid {started.get('pid')})")
    return redirect(url_for("pages.faults"))
