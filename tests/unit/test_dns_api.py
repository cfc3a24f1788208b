"""``GET /v1/dns`` on the real app over an in-memory cluster: the node's own answer to a name."""

from __future__ import annotations

from agent.model.commands import InstanceStatus
from agent.model.entities import Status
from tests.unit.test_api import Api, api, placed, web

__all__ = ["api"]

NAME = "nginx.web-server.default.corral.internal"


async def test_a_name_is_answered_from_the_nodes_records(api: Api) -> None:
    _, service = await web(api)
    first, second = await placed(api, service)
    empty = await api.ok("GET", f"/v1/dns?name={NAME}")
    assert empty["node"] == "h1" and empty["answer"]["rcode"] == "NOERROR" and empty["answer"]["answers"] == []
    await api.h.replica.write(InstanceStatus(first["id"], "h1", Status.RUNNING, ip="10.42.7.2"))
    await api.h.replica.write(InstanceStatus(second["id"], "h1", Status.RUNNING, ip="10.42.7.3"))
    body = await api.ok("GET", f"/v1/dns?name={NAME}.&type=A")
    assert sorted(a["value"] for a in body["answer"]["answers"]) == ["10.42.7.2", "10.42.7.3"]
    assert all(a["ttl"] == 1 for a in body["answer"]["answers"])
    ptr = await api.ok("GET", "/v1/dns?name=2.7.42.10.in-addr.arpa&type=PTR")
    assert [a["value"] for a in ptr["answer"]["answers"]] == ["web-server-nginx-1.web-server.default.corral.internal"]
    srv = await api.ok("GET", f"/v1/dns?name=_80._tcp.{NAME}&type=SRV")
    assert len(srv["answer"]["answers"]) == 2
    missing = await api.ok("GET", "/v1/dns?name=db.web-server.default.corral.internal")
    assert missing["answer"]["rcode"] == "NXDOMAIN" and missing["answer"]["zone"] == "corral.internal"
    outside = await api.ok("GET", "/v1/dns?name=example.com")
    assert outside["answer"]["rcode"] == "OUTSIDE"
    assert "answer" not in await api.ok("GET", "/v1/dns")


async def test_bad_parameters_are_400s_naming_them(api: Api) -> None:
    await api.error("GET", f"/v1/dns?name={NAME}&type=MX", 400, "bad_request", "type")
    await api.error("GET", "/v1/dns?name=" + "a" * 300, 400, "bad_request", "name")


async def test_an_external_service_and_a_link_are_answered(api: Api) -> None:
    _, service = await web(api)
    stack = "web-server"
    legacy = await api.ok("POST", "/v1/services", {"stack": stack, "name": "legacy", "kind": "external",
                                                   "external": {"addresses": ["192.0.2.10"]}}, status=201)
    assert legacy["spec"]["scale"] == 0 and legacy["spec"]["external"]["addresses"] == ["192.0.2.10"]
    await api.ok("POST", "/v1/services", {"stack": stack, "name": "mail", "kind": "external",
                                          "external": {"hostname": "smtp.example.net."}}, status=201)
    body = await api.ok("GET", "/v1/dns?name=legacy.web-server.default.corral.internal")
    assert [a["value"] for a in body["answer"]["answers"]] == ["192.0.2.10"]
    cname = await api.ok("GET", "/v1/dns?name=mail.web-server.default.corral.internal&type=CNAME")
    assert [(a["type"], a["value"]) for a in cname["answer"]["answers"]] == [("CNAME", "smtp.example.net")]
    await api.ok("PATCH", f"/v1/services/{service['id']}", {"links": {"old-db": "legacy"}})
    link = await api.ok("GET", f"/v1/dns?name=old-db.{NAME}")
    assert [a["value"] for a in link["answer"]["answers"]] == ["192.0.2.10"]
    await api.error("POST", "/v1/services", 400, "bad_request", "external.addresses[0]",
                    {"stack": stack, "name": "bad", "kind": "external", "external": {"addresses": ["10.42.3.3"]}})
    await api.error("POST", "/v1/services", 400, "bad_request", "scale",
                    {"stack": stack, "name": "bad", "kind": "external", "external": {"hostname": "a.example"},
                     "scale": 2})
    await api.error("PATCH", f"/v1/services/{service['id']}", 400, "bad_request", "links.Bad",
                    {"links": {"Bad": "x"}})
