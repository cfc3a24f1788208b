"""``/v1/drills/report``: the last drill report, kept in the cluster so that every node's UI shows it.

``corral drill`` runs on one machine (against the lab) and prints its report; it also ``PUT``s the
report here, and the agent keeps it in the replicated key-value store under :data:`REPORT_KEY` (a
key of the ``corral/`` prefix, which ``/v1/kv`` refuses to write: it is the cluster's own). Any node
answers ``GET`` from its replica. Who may read the kv store (read in ``default``) may read the report;
only an administrator stores one (the drills act as the lab's administrator).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from agent.api.auth import write
from agent.api.body import json_object
from agent.api.deps import DEPS
from agent.api.kv import MAX_VALUE, RESERVED_PREFIX
from agent.errors import BadRequest, NotFound
from agent.model.commands import KvPut

REPORT_KEY = RESERVED_PREFIX + "drill/last-report"
MAX_REPORT = MAX_VALUE
"""The report's size at most, as JSON (the kv store's limit for a value)."""
MAX_DRILLS, MAX_LINES, MAX_TEXT = 64, 200, 4000
DRILL_NAME = r"^[a-z0-9][a-z0-9-]{0,63}$"
VERDICTS = ("PASS", "FAIL")
REPORT_FIELDS = ("seed", "hosts", "started", "finished", "drills")
DRILL_FIELDS = ("name", "verdict", "reason", "action", "expect", "happened", "figures")


def _text(value: object, field: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadRequest(f"{field} must be a text of at most {MAX_TEXT} characters", field=field)
    return value


def _number(value: object, field: str, integer: bool, low: float, high: float) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if integer and isinstance(value, float) and not value.is_integer():  # JSON's 428.0 is a whole number
        number = False
    if not number or not low <= value <= high:  # type: ignore[operator]
        kind = "a whole number" if integer else "a number"
        raise BadRequest(f"{field} must be {kind} from {low:g} to {high:g}", field=field)
    return float(value)  # type: ignore[arg-type]


def check_report(body: dict[str, Any]) -> dict[str, Any]:
    """The report as it is kept; BadRequest naming the field that is wrong."""
    for key in body:
        if key not in REPORT_FIELDS:
            raise BadRequest(f"{key} is not a field of a drill report", field=key)
    for key in ("seed", "hosts", "drills"):
        if key not in body:
            raise BadRequest(f"a drill report needs {key}", field=key)
    _number(body["seed"], "seed", True, 0, 2**63 - 1)
    _number(body["hosts"], "hosts", True, 1, 1000)
    for key in ("started", "finished"):
        if body.get(key) is not None:
            _number(body[key], key, False, 0, 1e11)
    drills = body["drills"]
    if not isinstance(drills, list) or len(drills) > MAX_DRILLS:
        raise BadRequest(f"drills must be a list of at most {MAX_DRILLS} results", field="drills")
    for i, d in enumerate(drills):
        where = f"drills[{i}]"
        if not isinstance(d, dict):
            raise BadRequest(f"{where} must be an object", field=where)
        unknown = sorted(k for k in d if k not in DRILL_FIELDS)
        if unknown:
            raise BadRequest(f"{unknown[0]} is not a field of a drill's result", field=f"{where}.{unknown[0]}")
        if not isinstance(d.get("name"), str) or not re.match(DRILL_NAME, d["name"]):
            raise BadRequest(f"{where}.name must be a drill's name (lowercase letters, digits, -)",
                             field=f"{where}.name")
        if d.get("verdict") not in VERDICTS:
            raise BadRequest(f"{where}.verdict must be PASS or FAIL", field=f"{where}.verdict")
        _text(d.get("reason"), f"{where}.reason", nullable=True)
        for key in ("action", "expect"):
            if key in d:
                _text(d[key], f"{where}.{key}")
        happened = d.get("happened", [])
        if not isinstance(happened, list) or len(happened) > MAX_LINES:
            raise BadRequest(f"{where}.happened must be a list of at most {MAX_LINES} lines",
                             field=f"{where}.happened")
        for j, line in enumerate(happened):
            _text(line, f"{where}.happened[{j}]")
        if not isinstance(d.get("figures", {}), dict):
            raise BadRequest(f"{where}.figures must be an object", field=f"{where}.figures")
    return body


async def put_report(request: web.Request) -> web.Response:
    raw = await request.read()
    if len(raw) > MAX_REPORT:
        raise BadRequest(f"a drill report is at most {MAX_REPORT} bytes of JSON", field="body")
    report = check_report(await json_object(request))
    outcome = await write(request, KvPut(REPORT_KEY, json.dumps(report, separators=(",", ":")).encode(), None))
    return web.json_response({"key": REPORT_KEY, "index": outcome.index})


async def get_report(request: web.Request) -> web.Response:
    entry = request.app[DEPS].replica.state.kv.get(REPORT_KEY)
    if entry is None:
        raise NotFound("no drill report yet: `corral drill` stores one when it has run")
    value = entry.value.encode() if isinstance(entry.value, str) else entry.value
    return web.json_response({"index": entry.modify_index, "report": json.loads(value)})


__all__ = ["MAX_REPORT", "REPORT_KEY", "check_report", "get_report", "put_report"]
