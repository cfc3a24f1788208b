"""The lab's pure pieces: addressing, partition groups, the base image tarball, /proc parsing."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from agent.errors import DataDirError
from agent.lab import faults, image
from agent.lab.layout import bridge_address, check_subnet, host_specs
from agent.node import hostinfo
from agent.process.datadir import DataDir


def test_hosts_are_numbered_from_dot_eleven() -> None:
    hosts = host_specs(3, "10.77.0.0/24", Path("/x"))
    assert [(h.name, h.address, h.netns, h.veth) for h in hosts] == [
        ("h1", "10.77.0.11", "corral-h1", "crl-h1"),
        ("h2", "10.77.0.12", "corral-h2", "crl-h2"),
        ("h3", "10.77.0.13", "corral-h3", "crl-h3"),
    ]
    assert hosts[0].api_url == "https://10.77.0.11:8080"
    assert hosts[0].docker_host == "unix:///x/hosts/h1/docker.sock"
    assert bridge_address("10.77.0.0/24") == ("10.77.0.1", 24)


@pytest.mark.parametrize(
    "subnet, count, problem",
    [
        ("10.77.0.0/24", 32, None),
        ("10.42.3.0/24", 3, "overlaps the overlay"),
        ("172.17.5.0/24", 3, "overlaps Docker's default"),
        ("10.77.0.0/28", 5, "too small"),
        ("nonsense", 3, "is not a network"),
        ("fd00::/64", 3, "IPv4"),
    ],
)
def test_check_subnet(subnet: str, count: int, problem: str | None) -> None:
    result = check_subnet(subnet, count)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result


def test_partition_groups_complete_with_the_rest() -> None:
    names = ["h1", "h2", "h3", "h4"]
    assert faults.partition_groups(names, [["h1"]]) == [["h1"], ["h2", "h3", "h4"]]
    assert faults.partition_groups(names, [["h1", "h2"], ["h3"]]) == [["h1", "h2"], ["h3"], ["h4"]]
    with pytest.raises(faults.FaultError, match="two groups"):
        faults.partition_groups(names, [["h1"], ["h1", "h2"]])
    with pytest.raises(faults.FaultError, match="at least two groups"):
        faults.partition_groups(names, [names])


def test_blocked_sources_are_everyone_outside_the_group() -> None:
    addresses = {"h1": "a1", "h2": "a2", "h3": "a3"}
    blocked = faults.blocked_sources([["h1"], ["h2", "h3"]], addresses)
    assert blocked == {"h1": ("a2", "a3"), "h2": ("a1",), "h3": ("a1",)}


@pytest.fixture(scope="module")
def base_image() -> tuple[bytes, str]:
    return image.build_base_image()


def test_base_image_is_deterministic(base_image: tuple[bytes, str]) -> None:
    again = image.build_base_image()
    assert again == base_image


def test_base_image_is_a_loadable_docker_save_tarball(base_image: tuple[bytes, str]) -> None:
    tarball, image_id = base_image
    with tarfile.open(fileobj=io.BytesIO(tarball)) as outer:
        manifest = json.loads(outer.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == ["corral/base:latest"]
        config_bytes = outer.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        layer = outer.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert "sha256:" + hashlib.sha256(config_bytes).hexdigest() == image_id
    config = json.loads(config_bytes)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as root:
        members = {m.name: m for m in root.getmembers()}
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode & 0o111
    for tool in ("bin/sh", "usr/sbin/httpd", "usr/bin/wget", "usr/bin/nc", "bin/ping"):
        assert members[tool].issym() and members[tool].linkname == "/bin/busybox", tool
    assert members["tmp"].mode == 0o1777
    assert members["var/www/index.html"].isreg()


def test_meminfo_reads_bytes(tmp_path: Path) -> None:
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       16384 kB\nMemFree:     1 kB\nMemAvailable:    8192 kB\n")
    assert hostinfo.meminfo(path) == {"total": 16384 * 1024, "available": 8192 * 1024}
    assert hostinfo.meminfo(tmp_path / "missing") == {}


def test_data_dir_is_locked_and_keeps_its_node_id(tmp_path: Path) -> None:
    first = DataDir.open(tmp_path / "d")
    try:
        assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
        with pytest.raises(DataDirError, match="in use by agent pid"):
            DataDir.open(tmp_path / "d")
    finally:
        first.close()
    again = DataDir.open(tmp_path / "d")
    assert again.node_id == first.node_id
    again.close()


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataDirError, match="not a directory"):
        DataDir.open(tmp_path / "f")


def test_lab_up_ends_with_the_web_uis_url_and_the_admins_login(tmp_path: Path) -> None:
    from agent.lab import Lab, cli
    from agent.lab.layout import DEFAULT_SUBNET

    lab = Lab(root=tmp_path)
    lab._write_state({"hosts": ["h1", "h2", "h3"], "subnet": DEFAULT_SUBNET})
    with cli.console.capture() as captured:
        cli._print_ui(lab)
    said = captured.get()
    assert f"web UI: {lab.host('h1').api_url}/" in said and lab.host("h3").api_url in said
    assert "log in as admin" in said and str(lab.admin_password_file) in said
