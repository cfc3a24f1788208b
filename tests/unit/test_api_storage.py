"""The storage routes on the real app over an in-memory cluster: stack deploys (whole, dry run, errors
with the field), volumes, configs and secrets (sealed, never shown back), settings."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.model.storage import SECRET_PURPOSE
from mesh import sealing
from tests.unit.fakes import SECRET, running_api
from tests.unit.test_api import Api


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as harness, aiohttp.ClientSession(headers=harness.auth) as session:
        yield Api(harness, session)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


WEB = {"image": "corral/base", "mounts": [{"type": "config", "source": "site.conf", "target": "/etc/site.conf"},
                                          {"type": "secret", "source": "pw"},
                                          {"type": "volume", "source": "data", "target": "/data"}]}
CONFIGS: dict[str, Any] = {"site.conf": {"files": [{"path": "", "data": b64(b"listen 80;")}]},
                           "pw": {"secret": True, "files": [{"path": "", "data": b64(b"hunter2")}]}}


async def test_a_dry_run_says_what_would_happen_and_changes_nothing(api: Api) -> None:
    before = api.h.replica.applied_index
    plan = await api.ok("POST", "/v1/stacks/app/deploy?dry_run=true", {"services": {"web": WEB}, "configs": CONFIGS})
    assert plan["dry_run"] and not plan["exists"]
    assert plan["services"]["created"] == ["web"] and sorted(plan["configs"]["created"]) == ["pw", "site.conf"]
    assert plan["volumes"]["created"] == ["app_data"]
    assert api.h.replica.applied_index == before and not api.h.replica.state.stacks


async def test_a_deploy_makes_everything_at_once_and_seals_the_secret(api: Api) -> None:
    done = await api.ok("POST", "/v1/stacks/app/deploy", {"services": {"web": WEB}, "configs": CONFIGS})
    assert done["stack_view"]["name"] == "app" and len(done["stack_view"]["services"]) == 1
    state = api.h.replica.state
    sealed = state.storage.configs["default/app_pw"].files[0][1]
    assert b"hunter2" not in sealed and b"hunter2" not in state.snapshot(), "never in the state in the clear"
    assert sealing.open_sealed(SECRET, SECRET_PURPOSE, sealed) == b"hunter2"
    shown = await api.ok("GET", "/v1/configs/app_pw?content=true")
    assert shown["secret"] and "content" not in shown
    conf = await api.ok("GET", "/v1/configs/app_site.conf?content=true")
    assert base64.b64decode(conf["content"][0]["data"]) == b"listen 80;"
    again = await api.ok("POST", "/v1/stacks/app/deploy", {"services": {"web": WEB}, "configs": CONFIGS})
    assert again["services"]["unchanged"] == ["web"] and sorted(again["configs"]["unchanged"]) == ["pw", "site.conf"]


async def test_bad_deploys_name_what_is_wrong_and_leave_nothing(api: Api) -> None:
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"services": {}}, 400, "bad_request", "services"),
        ({"services": {"web": {"image": "corral/base", "scale": -1}}}, 400, "bad_request", "services.web.scale"),
        ({"services": {"web": WEB}}, 404, "not_found", "services.web.mounts[0]"),
        ({"services": {"web": {"image": "corral/base"}}, "configs": {"x": {"files": [{"path": "", "data": "!!"}]}}},
         400, "bad_request", "configs.x.files"),
        ({"services": {"web": {"image": "corral/base"}}, "configs": {"x": {"files": [{"path": "", "data": b64(
            b"x" * (512 * 1024 + 1))}]}}}, 400, "bad_request", "configs.x"),
        ({"services": {"web": {"image": "corral/base", "mounts": [{"type": "bind", "source": "/etc",
                                                                   "target": "/x"}]}}},
         400, "bad_request", "services.web.mounts[0]"),
        ({"services": {"web": {"image": "corral/base"}}, "extra": 1}, 400, "bad_request", "extra"),
    ]
    for body, status, code, field in cases:
        await api.error("POST", "/v1/stacks/app/deploy", status, code, field, body=body)
    assert not api.h.replica.state.stacks and not api.h.replica.state.storage.configs
    got, payload, _ = await api.call("POST", "/v1/stacks/app/deploy", raw=b"{" + b" " * (25 * 2**20) + b"}")
    assert got == 413 and payload["error"] == "too_large"


async def test_volumes_and_settings(api: Api) -> None:
    made = await api.ok("POST", "/v1/volumes", {"name": "shared", "host": "h1", "labels": ["team=web"]}, status=201)
    assert (made["host"], made["scope"], made["labels"], made["state"]) == ("h1", "external", {"team": "web"}, "ready")
    await api.error("POST", "/v1/volumes", 409, "conflict", "name", body={"name": "shared"})
    await api.error("POST", "/v1/volumes", 404, "not_found", "host", body={"name": "v2", "host": "nope"})
    await api.error("POST", "/v1/volumes", 400, "bad_request", "name", body={"name": "-bad"})
    listed = await api.ok("GET", "/v1/volumes")
    assert [v["name"] for v in listed["items"]] == ["shared"]
    await api.error("GET", "/v1/volumes/nope", 404, "not_found", "name")
    gone = await api.ok("DELETE", "/v1/volumes/shared")
    assert gone == {"removed": "default/shared", "state": "removing"}, "its host deletes it, then it is forgotten"

    assert await api.ok("GET", "/v1/settings") == {"bind_paths": []}
    await api.error("PATCH", "/v1/settings", 400, "bad_request", "paths[0]", body={"bind_paths": ["srv"]})
    changed = await api.ok("PATCH", "/v1/settings", {"bind_paths": ["/srv", "/data/"]})
    assert changed == {"bind_paths": ["/data", "/srv"]}
    bind = {"image": "corral/base", "mounts": [{"type": "bind", "source": "/srv/www", "target": "/www"}]}
    await api.ok("POST", "/v1/stacks/b/deploy", {"services": {"web": bind}})
