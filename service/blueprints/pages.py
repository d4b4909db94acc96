"""The dashboard's HTML pages (each has a JSON twin in ``api``)."""

from __future__ import annotations

import time

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for

from .. import views
from .api import number

bp = Blueprint("pages", __name__)


def store():
    return current_app.config["STORE"]


@bp.get("/")
def index():
    return redirect(url_for("pages.incidents"))


@bp.get("/incidents")
def incidents():
    data = views.incident_list(store(), 50, number("before"), request.args.get("guest") or None)
    return render_template("incidents.html", **data, total=store().counts()["incidents"])


@bp.get("/incidents/<incident_id>")
def incident(incident_id: str):
    found = views.incident_detail(store(), incident_id)
    if found is None:
        abort(404, f"no incident {incident_id!r}")
    return render_template("incident.html", inc=found)


@bp.get("/guests")
def guests():
    return render_template("guests.html", guests=views.guests_view(store(), time.time()))


@bp.get("/guests/<name>")
def guest(name: str):
    if name not in {g["name"] for g in store().guests()}:
        abort(404, f"no guest {name!r}")
    return render_template("guest.html", guest=name)


@bp.get("/faults")
def faults():
    from ..app import shipped_campaigns
    data = views.faults_view(store(), request.args.get("campaign") or None)
    starter = current_app.config["START_CAMPAIGN"]
    return render_template("faults.html", **data, shipped=sorted(shipped_campaigns()),
                           running=starter.running() if hasattr(starter, "running") else None,
                           lab=current_app.config["LAB"])
