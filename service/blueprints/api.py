"""The JSON twins of the pages, under /api/; writes need the token."""

from __future__ import annotations

import time

from flask import Blueprint, abort, current_app, jsonify, request

from .. import views
from .auth import require_write

bp = Blueprint("api", __name__, url_prefix="/api")


def number(name: str, default=None, *, cast=float, low=None, high=None):
    """A query parameter as a number, or 400."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        abort(400, f"{name}={raw!r} is not a {'whole ' if cast is int else ''}number")
    if (low is not None and value < low) or (high is not None and value > high):
        abort(400, f"{name}={raw} is out of range [{low}, {high}]")
    return value


def store():
    return current_app.config["STORE"]


@bp.get("/incidents")
def incidents():
    limit = number("limit", 50, cast=int, low=1, high=1000)
    return jsonify(views.incident_list(store(), limit, number("before"),
                                       request.args.get("guest") or None))


@bp.get("/incidents/<incident_id>")
def incident(incident_id: str):
    found = views.incident_detail(store(), incident_id)
    if found is None:
        abort(404, f"no incident {incident_id!r}")
    return jsonify(found)


@bp.get("/guests")
def guests():
    return jsonify({"guests": views.guests_view(store(), time.time())})


@bp.get("/guests/<name>/timeline")
def timeline(name: str):
    found = views.timeline(store(), name, number("since"),
                           number("window", 600.0, low=1.0, high=7 * 86400.0))
    if found is None:
        abort(404, f"no guest {name!r}")
    return jsonify(found)


@bp.get("/faults")
def faults():
    return jsonify(views.faults_view(store(), request.args.get("campaign") or None))


@bp.get("/campaigns")
def campaigns():
    from ..app import shipped_campaigns
    starter = current_app.config["START_CAMPAIGN"]
    running = starter.running() if hasattr(starter, "running") else None
    return jsonify({"shipped": sorted(shipped_campaigns()), "running": running})


@bp.post("/faults/heal")
@require_write
def heal():
    done = current_app.config["HEAL"]()
    return jsonify({"healed": done})


@bp.post("/campaigns")
@require_write
def start_campaign():
    from ..app import shipped_campaigns
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        abort(400, 'expected a JSON object {"name": CAMPAIGN}')
    if body["name"] not in shipped_campaigns():
        abort(400, f"unknown campaign {body['name']!r}; shipped: "
                   f"{', '.join(sorted(shipped_campaigns()))}")
    try:
        started = current_app.config["START_CAMPAIGN"](body["name"])
    except RuntimeError as exc:
        abort(409, str(exc))
    return jsonify(started), 202
