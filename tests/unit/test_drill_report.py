"""The last drill report kept in the cluster: its checks, the CLI's fitting, the routes, the reserved key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.api import drills
from agent.api.drills import REPORT_KEY, check_report
from agent.drill.cli import fit_report, store_report
from agent.errors import BadRequest
from tests.unit.fakes import Harness, running_api

GOOD: dict[str, Any] = {"seed": 42, "hosts": 4, "started": 1.7e9, "finished": 1.7e9 + 60, "drills": [
    {"name": "leader-kill", "verdict": "PASS", "reason": None, "action": "kill", "expect": "a new leader",
     "happened": ["elected in 1.2 s"], "figures": {"election_s": 1.2, "business_failed": 0}},
    {"name": "partition", "verdict": "FAIL", "reason": "took 9 s", "happened": [], "figures": {}}]}


def bad(**change: Any) -> dict[str, Any]:
    return {**GOOD, **change}


def drill(**change: Any) -> dict[str, Any]:
    return {**GOOD, "drills": [{**GOOD["drills"][0], **change}]}


@pytest.mark.parametrize(("body", "field"), [
    (bad(extra=1), "extra"),
    ({"hosts": 4, "drills": []}, "seed"),
    (bad(seed=-1), "seed"), (bad(seed="7"), "seed"), (bad(seed=True), "seed"),
    (bad(hosts=0), "hosts"), (bad(hosts=4.5), "hosts"), (bad(started="now"), "started"),
    (bad(drills={}), "drills"), (bad(drills=[{}] * 65), "drills"),
    (bad(drills=["x"]), "drills[0]"),
    (drill(name="Leader Kill"), "drills[0].name"),
    (drill(verdict="ok"), "drills[0].verdict"),
    (drill(reason=3), "drills[0].reason"),
    (drill(action="x" * 4001), "drills[0].action"),
    (drill(happened="x"), "drills[0].happened"),
    (drill(happened=[1]), "drills[0].happened[0]"),
    (drill(figures=[]), "drills[0].figures"),
    (drill(color="red"), "drills[0].color"),
])
def test_a_malformed_report_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_report(body)
    assert err.value.details.get("field") == field


def test_a_good_report_is_kept_as_it_is() -> None:
    assert check_report(json.loads(json.dumps(GOOD))) == GOOD
    assert check_report(bad(started=None, finished=None))["seed"] == 42
    assert check_report(bad(hosts=4.0))["hosts"] == 4.0, "JSON's 4.0 is a whole number"


def test_the_cli_fits_any_report_within_the_checks() -> None:
    huge = bad(drills=[{"name": f"d{i}", "verdict": "PASS", "reason": "r" * 5000, "action": "a" * 9000,
                        "expect": "e", "happened": ["h" * 5000] * 300, "figures": {"x": 1}} for i in range(70)])
    fitted = fit_report(huge)
    check_report(fitted)
    first = fitted["drills"][0]
    assert len(fitted["drills"]) == drills.MAX_DRILLS and len(first["happened"]) == drills.MAX_LINES
    assert first["happened"][-1] == "… and 101 more lines" and first["reason"].endswith("…")
    assert fit_report(GOOD) == {**GOOD, "drills": [{**GOOD["drills"][0]},
                                                   {**GOOD["drills"][1], "action": "", "expect": ""}]}


@pytest.fixture
async def api() -> AsyncIterator[tuple[Harness, aiohttp.ClientSession]]:
    async with running_api() as harness, aiohttp.ClientSession(headers=harness.auth) as session:
        yield harness, session


async def call(api: tuple[Harness, aiohttp.ClientSession], method: str, path: str,
               body: bytes | None = None) -> tuple[int, Any]:
    harness, session = api
    async with session.request(method, harness.url + path, data=body) as resp:
        return resp.status, json.loads(await resp.read() or b"null")


async def test_the_report_is_stored_and_read_back_and_bad_ones_change_nothing(
        api: tuple[Harness, aiohttp.ClientSession]) -> None:
    status, body = await call(api, "GET", "/v1/drills/report")
    assert status == 404 and "corral drill" in body["message"]
    status, body = await call(api, "PUT", "/v1/drills/report", json.dumps(GOOD).encode())
    assert status == 200 and body["key"] == REPORT_KEY
    status, got = await call(api, "GET", "/v1/drills/report")
    assert status == 200 and got["report"] == GOOD and got["index"] == body["index"]
    index = api[0].replica.applied_index
    for raw, field in ((b"not json", "body"), (json.dumps(drill(verdict="maybe")).encode(), "drills[0].verdict"),
                       (b"x" * (drills.MAX_REPORT + 1), "body")):
        status, answer = await call(api, "PUT", "/v1/drills/report", raw)
        assert status == 400 and answer["details"]["field"] == field, answer
    assert api[0].replica.applied_index == index, "nothing proposed"
    assert (await call(api, "GET", "/v1/drills/report"))[1]["report"] == GOOD


async def test_the_kv_store_does_not_write_the_clusters_own_keys(api: tuple[Harness, aiohttp.ClientSession]) -> None:
    assert (await call(api, "PUT", "/v1/drills/report", json.dumps(GOOD).encode()))[0] == 200
    for method in ("PUT", "DELETE"):
        status, answer = await call(api, method, f"/v1/kv/{REPORT_KEY}", b"forged")
        assert status == 400 and answer["details"]["field"] == "key" and "cluster's own" in answer["message"]
    status, entry = await call(api, "GET", f"/v1/kv/{REPORT_KEY}")
    assert status == 200 and json.loads(entry["value"]) == GOOD, "readable like any key, and unchanged"
    assert (await call(api, "PUT", "/v1/kv/corral-not-reserved", b"v"))[0] == 200


async def test_corral_drill_stores_its_report_through_a_host_that_answers(
        api: tuple[Harness, aiohttp.ClientSession], monkeypatch: pytest.MonkeyPatch) -> None:
    harness, _ = api
    monkeypatch.setenv("CORRAL_TOKEN", harness.token)

    class Host:
        def __init__(self, name: str, url: str) -> None:
            self.name, self.api_url = name, url

    class FakeLab:
        def hosts(self) -> list[Host]:  # h1 is down (nothing listens there): h2 takes it
            return [Host("h1", "http://127.0.0.1:9"), Host("h2", harness.url)]

    report = {**GOOD, "drills": [{**GOOD["drills"][0], "happened": ["x" * 5000]}]}
    await asyncio.to_thread(store_report, FakeLab(), report)  # type: ignore[arg-type]
    status, got = await call(api, "GET", "/v1/drills/report")
    assert status == 200 and got["report"]["seed"] == 42
    assert got["report"]["drills"][0]["happened"][0].endswith("…"), "fitted before it was sent"
