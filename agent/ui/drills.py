"""The last drill report: what ``corral drill`` stored in the cluster (``GET /v1/drills/report``, from
this node's replica), with each drill's action, expectation, what happened, its figures and verdict.
Needs what that route needs: read in ``default`` (the kv store's environment)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from aiohttp import web

from agent.api.auth import authorize
from agent.api.deps import DEPS
from agent.api.drills import REPORT_KEY
from agent.model.policy import Permission
from agent.model.state import KV_ENVIRONMENT
from agent.ui.render import render

DRILL_DEFAULTS: dict[str, Any] = {"name": "?", "verdict": "?", "reason": None, "action": "", "expect": "",
                                  "happened": [], "figures": {}}


def shaped(raw: object) -> dict[str, Any]:
    """The stored report with every field the page draws (one an older ``corral drill`` stored may lack some)."""
    report = raw if isinstance(raw, dict) else {}
    drills = [d for d in report.get("drills") or [] if isinstance(d, dict)]
    return {"seed": report.get("seed"), "hosts": report.get("hosts"), "started": report.get("started"),
            "finished": report.get("finished"), "drills": [{**DRILL_DEFAULTS, **d} for d in drills]}


async def drills_page(request: web.Request) -> web.StreamResponse:
    authorize(request, Permission.READ, KV_ENVIRONMENT)
    entry = request.app[DEPS].replica.state.kv.get(REPORT_KEY)
    report = None
    if entry is not None:
        raw = entry.value.encode() if isinstance(entry.value, str) else entry.value
        report = shaped(json.loads(raw))
    passed = sum(1 for d in report["drills"] if d.get("verdict") == "PASS") if report else 0
    started = report.get("started") if report else None
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC") \
        if isinstance(started, int | float) else None
    return render(request, "drills.html", {"report": report, "passed": passed, "started": when,
                                           "index": entry.modify_index if entry else None})


__all__ = ["drills_page"]
