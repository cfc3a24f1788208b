"""Images on the real lab, with no registry: `corral image load` on one host, and the hosts a service is
then placed on fetch the image from peers (verified, resumed from another holder when the sender is
killed mid-transfer); bad tarballs refused with nothing left behind.

Each host sends a tarball at 40 MB/s at most here (``--image-send-rate``), so that a transfer lasts long
enough to be cut off on purpose and several hosts ask at once."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.client import ApiError, Client
from agent.lab import Lab
from agent.lab.image import build_base_image
from tests.cli import corral
from tests.lab.cluster import until
from tests.lab.conftest import fresh_lab

RATE = "40"


@pytest.fixture(scope="module")
def lab4() -> Iterator[Lab]:
    before = os.environ.get("CORRAL_IMAGE_SEND_RATE")
    os.environ["CORRAL_IMAGE_SEND_RATE"] = RATE
    try:
        yield from fresh_lab(4)
    finally:
        if before is None:
            os.environ.pop("CORRAL_IMAGE_SEND_RATE", None)
        else:
            os.environ["CORRAL_IMAGE_SEND_RATE"] = before


def _client(lab: Lab, host: str) -> Client:
    return Client(lab.host(host).api_url, token=lab.admin_token())


def _service(lab: Lab, name: str, image: str, scale: int, on: list[str] | None = None) -> dict[str, Any]:
    admin = _client(lab, "h1")
    stack = admin.post("/v1/stacks", {"name": name})
    body: dict[str, Any] = {"stack": stack["id"], "name": "app", "image": image, "scale": scale,
                            "command": "exec sleep 3600"}
    if on:
        body["placement"] = {"constraints": [f"node.hostname=={on[0]}"]} if len(on) == 1 else {
            "constraints": [f"node.hostname!={h}" for h in ("h1", "h2", "h3", "h4") if h not in on]}
    return dict(admin.post("/v1/services", body))


def _running(lab: Lab, service: str, scale: int, via: str = "h4") -> list[dict[str, Any]] | None:
    items = _client(lab, via).items("/v1/containers", service=service)
    return items if len(items) == scale and all(c["state"] == "running" for c in items) else None


def _load(lab: Lab, host: str, tarball: Path) -> dict[str, Any]:
    with tarball.open("rb") as f:
        return dict(_client(lab, host).upload("/v1/images", f, tarball.stat().st_size))


def _cached_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache (util-linux's fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def _job(lab: Lab, host: str, image: str) -> dict[str, Any]:
    return dict(next(j for j in _client(lab, host).get("/v1/host/images")["jobs"] if j["image"] == image))


def test_an_image_loaded_on_one_host_reaches_the_hosts_a_service_is_placed_on(lab4: Lab, tmp_path: Path) -> None:
    """A new image goes as tarballs, as a tree (h1 sends two at a time, a third host gets its bytes relayed
    and keeps no copy); a rebuild on it (one more layer) is a delta: each host fetches only the new layer
    (and the config) by digest from h1's registry routes."""
    data, image_id = build_base_image(tag="test/spread:1", payload=60 * 2**20, seed="spread")
    tarball = tmp_path / "spread.tar"
    tarball.write_bytes(data)
    env = {"CORRAL_URL": lab4.host("h1").api_url}
    hosts = ("h1", "h2", "h3", "h4")
    counters = ("received_bytes", "served_bytes", "redirects", "blob_served_bytes", "delta_loads", "delta_bytes",
                "leaf_fetches")

    def moved(since: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
        now = {h: _client(lab4, h).get("/v1/host/images") for h in hosts}
        return {h: {k: now[h][k] - since[h][k] for k in counters} for h in hosts}

    before = {h: _client(lab4, h).get("/v1/host/images") for h in hosts}  # the base image came this way too
    loaded = corral("image", "load", str(tarball), env=env)
    assert loaded.returncode == 0 and "held by h1" in loaded.stdout, loaded.stderr
    service = _service(lab4, "spread", "test/spread:1", 4)
    # the others wait for the image, saying so, then run
    until("every container runs", lambda: _running(lab4, service["id"], 4), 90)
    delta = moved(before)
    assert sum(d["received_bytes"] for d in delta.values()) == 3 * len(data), "three hosts got every byte once"
    # three asked at once, h1 sends two at a time: the third got its bytes relayed, not all from h1
    assert delta["h1"]["served_bytes"] < 3 * len(data), delta
    assert sum(d["redirects"] for d in delta.values()) >= 1, delta
    assert sum(d["delta_loads"] for d in delta.values()) == 0, "most of a new image is new: tarballs, no deltas"
    holders = until("the hosts that got a whole copy hold it", lambda: next(
        (i["holders"] for i in _client(lab4, "h3").items("/v1/images") if i["id"] == image_id
         and len(i["holders"]) == 4 - sum(d["leaf_fetches"] for d in moved(before).values())), None), 20)
    leaves = [h for h in hosts if h not in holders]
    assert "h1" in holders and leaves, (holders, delta)
    for leaf in leaves:  # a leaf relayed nothing and kept nothing
        assert delta[leaf]["served_bytes"] == 0 and delta[leaf]["leaf_fetches"] == 1, delta
        assert not list((lab4.host(leaf).agent_data / "images" / "partial").iterdir())
        assert "kept" not in _job(lab4, leaf, "test/spread:1")["timeline"]
    digest = hashlib.sha256(data).hexdigest()
    for relay in (h for h in holders if h != "h1"):  # its spool went to the disk around the page cache
        kept = lab4.host(relay).agent_data / "images" / f"{digest}.tar"
        assert _cached_bytes(kept) <= 64 * 2**10, f"{relay} kept its copy in the page cache"
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == digest, "and every byte of it is right"
    events = [e["message"] for e in _client(lab4, "h1").items("/v1/events", kind="image.added")]
    assert any("test/spread:1" in m and "on h1" in m for m in events)
    listed = corral("image", "ls", env=env)
    assert listed.returncode == 0 and "test/spread:1" in listed.stdout and ", ".join(holders) in listed.stdout
    # a rebuild: the same layers and 4 MiB on top, loaded on h1; every host fetches only the new layer
    rebuilt, rebuilt_id = build_base_image(tag="test/spread:2", payload=60 * 2**20, seed="spread",
                                           extra=4 * 2**20, extra_seed="v2")
    (tmp_path / "spread2.tar").write_bytes(rebuilt)
    _load(lab4, "h1", tmp_path / "spread2.tar")
    before = {h: _client(lab4, h).get("/v1/host/images") for h in hosts}
    service = _client(lab4, "h1").patch(f"/v1/services/{service['id']}?now=true", {"image": "test/spread:2"})
    def got(host: str) -> bool:
        jobs = _client(lab4, host).get("/v1/host/images")["jobs"]
        return any(j["image"] == "test/spread:2" and j["state"] != "running" for j in jobs)

    until("h2-h4 have the rebuild", lambda: all(got(h) for h in ("h2", "h3", "h4")), 90)
    until("every container runs the rebuild", lambda: _running(lab4, service["id"], 4), 90)
    delta = moved(before)
    for host in ("h2", "h3", "h4"):
        job = _job(lab4, host, "test/spread:2")
        assert job["state"] == "done" and "delta" in job["timeline"] and job["via"] == "h1", job
        assert 4 * 2**20 <= job["delta_missing"] < 5 * 2**20, job
        assert delta[host]["delta_loads"] == 1 and delta[host]["received_bytes"] == 0, delta
        assert 4 * 2**20 <= delta[host]["delta_bytes"] < 5 * 2**20, delta
    assert 3 * 4 * 2**20 < delta["h1"]["blob_served_bytes"] < 3 * 5 * 2**20, "the new layer and the config, thrice"
    assert delta["h1"]["served_bytes"] == 0, delta
    catalog = {i["id"]: i["holders"] for i in _client(lab4, "h2").items("/v1/images")}
    assert catalog[rebuilt_id] == ["h1"], "a delta keeps no tarball"
    transfers = corral("image", "transfers", env={"CORRAL_URL": lab4.host("h3").api_url})
    assert transfers.returncode == 0 and "deltas (only the missing layers): 1 loaded" in transfers.stdout, \
        transfers.stdout


def test_a_transfer_cut_by_killing_its_sender_resumes_from_another_holder(lab4: Lab, tmp_path: Path) -> None:
    data, image_id = build_base_image(tag="test/resume:1", payload=160 * 2**20, seed="resume")
    tarball = tmp_path / "resume.tar"
    tarball.write_bytes(data)
    _load(lab4, "h1", tarball)
    first = _service(lab4, "resume-a", "test/resume:1", 1, on=["h2"])
    until("h2 runs it", lambda: _running(lab4, first["id"], 1), 90)
    until("h2 holds it too", lambda: any(i["id"] == image_id and i["holders"] == ["h1", "h2"]
                                         for i in _client(lab4, "h1").items("/v1/images")), 10)
    second = _service(lab4, "resume-b", "test/resume:1", 1, on=["h3"])
    h3 = _client(lab4, "h3")

    def sending() -> str | None:
        for job in h3.get("/v1/host/images")["jobs"]:
            if job["image"] == "test/resume:1" and job["state"] == "running" and " from h" in job["detail"]:
                share = job["detail"].split()[1]
                if share.isdigit() and 10 <= int(share) <= 70:
                    return str(job["detail"].rsplit(" ", 1)[-1])
        return None

    sender = until("h3 is part way through", sending, 60, every=0.05)
    lab4.kill_agent(sender)
    try:
        until("the container runs on h3 all the same", lambda: _running(lab4, second["id"], 1), 90)
        job = next(j for j in h3.get("/v1/host/images")["jobs"] if j["image"] == "test/resume:1")
        assert job["state"] == "done" and job["attempts"] == 1, job
        other = "h2" if sender == "h1" else "h1"
        assert job["resumed"] and job["resumed"][0].startswith(other + "@"), job
        assert int(job["resumed"][0].split("@")[1]) > 0, "resumed at the offset reached, not from the start"
        assert h3.get("/v1/host/images")["received_bytes"] < 1.5 * len(data)
    finally:
        lab4.start_agent(sender)


def test_bad_tarballs_are_refused_and_leave_nothing_behind(lab4: Lab, tmp_path: Path) -> None:
    data, _ = build_base_image(tag="test/bad:1", payload=2 * 2**20, seed="bad")
    h4 = lab4.host("h4")
    cases = {"truncated": data[: len(data) // 2], "garbage": os.urandom(200_000),
             "no manifest": data[:1024] + b"\0" * 2048}
    before = _client(lab4, "h4").items("/v1/images")
    for name, body in cases.items():
        path = tmp_path / "bad.tar"
        path.write_bytes(body)
        with pytest.raises(ApiError) as refused:
            _load(lab4, "h4", path)
        assert refused.value.status == 400 and refused.value.code == "bad_request", (name, refused.value.message)
    cli = corral("image", "load", str(tmp_path / "nowhere.tar"), env={"CORRAL_URL": h4.api_url})
    assert cli.returncode != 0 and "nowhere.tar" in cli.stderr
    assert _client(lab4, "h4").items("/v1/images") == before
    cache = h4.agent_data / "images"
    assert not list((cache / "partial").iterdir()), "no partial file is left"
    assert {p.name for p in cache.glob("*.tar")} <= {f"{i['digest']}.tar" for i in before}
    # an image no peer holds, from a registry that refuses (h4's own loopback: nothing leaves the lab)
    waiting = _service(lab4, "nothing", "127.0.0.1:9/nothing:1", 1, on=["h4"])

    def failed() -> dict[str, Any] | None:
        items = _client(lab4, "h4").items("/v1/containers", service=waiting["id"])
        return items[0] if items and items[0]["state"] == "pull-failed" else None

    seen = until("an image nobody has is a pull failure with the reason", failed, 60)
    assert "image.pull_failed: 127.0.0.1:9 refused the connection" in (seen.get("error") or ""), seen


def test_a_stack_with_build_is_built_on_one_host_and_reaches_the_others(lab4: Lab, tmp_path: Path) -> None:
    """`build:` in a compose file: the folder goes to one host, which builds it FROM the cluster's base image;
    the others fetch the built image peer to peer; a changed folder is a new tag that replaces the
    containers; a failing build is a clear error and changes nothing."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text('FROM corral/base\nCOPY hello.txt /hello.txt\n'
                                    'CMD ["sh", "-c", "cat /hello.txt; exec sleep 3600"]\n')
    (app / "hello.txt").write_text("hello v1\n")
    (app / "secret.key").write_text("left out by .dockerignore\n")
    (app / ".dockerignore").write_text("secret.key\n")
    (tmp_path / "compose.yml").write_text("services:\n  web:\n    build: ./app\n    deploy:\n      replicas: 4\n")
    env = {"CORRAL_URL": lab4.host("h2").api_url}
    done = corral("stack", "deploy", "-f", str(tmp_path / "compose.yml"), "built", env=env, timeout=180)
    assert done.returncode == 0 and "built sha256:" in done.stdout and "4/4 running" in done.stdout, \
        done.stdout + done.stderr
    service = next(s for s in _client(lab4, "h1").items("/v1/services") if s["stack_name"] == "built")
    tag = service["spec"]["image"]
    assert tag.startswith("corral-build/built-web:")
    built = next(i for i in _client(lab4, "h1").items("/v1/images") if tag in i["tags"])
    # built on h2, the answering host, on the base every host has: the other three took deltas from h2
    assert built["source"] == "build" and built["holders"] == ["h2"], built
    for host in ("h1", "h3", "h4"):
        job = _job(lab4, host, tag)
        assert job["state"] == "done" and job["via"] == "h2" and "delta" in job["timeline"], job
        assert job["delta_missing"] < 2**20, "the built layer only (a few bytes of hello.txt)"
    again = corral("stack", "deploy", "-f", str(tmp_path / "compose.yml"), "built", env=env, timeout=180)
    assert again.returncode == 0 and "built already" in again.stdout, again.stdout + again.stderr
    (app / "hello.txt").write_text("hello v2\n")
    changed = corral("stack", "deploy", "-f", str(tmp_path / "compose.yml"), "built", env=env, timeout=180)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    service = _client(lab4, "h1").get(f"/v1/services/{service['id']}")
    assert service["spec"]["image"] != tag, "a changed folder is a new tag"
    running = until("4 containers of the new build", lambda: _running(lab4, service["id"], 4), 90)
    logs = corral("logs", running[0]["id"], env=env)
    assert "hello v2" in logs.stdout, logs.stdout + logs.stderr
    (app / "Dockerfile").write_text("FROM corral/base\nRUN exit 3\n")
    failed = corral("stack", "deploy", "-f", str(tmp_path / "compose.yml"), "built", env=env, timeout=180)
    assert failed.returncode == 1 and "the build failed" in failed.stderr and "non-zero code: 3" in failed.stderr
    assert _client(lab4, "h1").get(f"/v1/services/{service['id']}")["spec"]["image"] == service["spec"]["image"]
