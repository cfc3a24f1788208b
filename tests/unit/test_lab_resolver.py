"""The lab's upstream resolver: Debian's dnsmasq answering its few names, NXDOMAIN for other lab names,
REFUSED for the rest (so no query leaves the machine), found by its argv and stopped."""

from __future__ import annotations

import shutil
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from agent.lab import resolver
from tests.unit.test_dns_server import free_port

pytestmark = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (scripts/install.sh)")


async def test_it_answers_its_names_and_refuses_the_world(tmp_path: Path) -> None:
    spec = resolver.ResolverSpec(tmp_path, "127.0.0.1", free_port())
    pid = resolver.start(spec)
    try:
        await resolver.wait_ready(spec, pid)
        assert resolver.pids(tmp_path) == {pid}

        async def ask(name: str) -> dns.message.Message:
            return await dns.asyncquery.udp(dns.message.make_query(name, "A"), spec.address, port=spec.port,
                                            timeout=2)

        for name, address in resolver.NAMES.items():
            assert [r.to_text() for rrset in (await ask(name)).answer for r in rrset] == [address]
        assert (await ask("nothing.lab.example")).rcode() == dns.rcode.NXDOMAIN
        assert (await ask("example.com")).rcode() == dns.rcode.REFUSED
    finally:
        assert resolver.stop(tmp_path) == ["resolver: 1 processes"]
    assert resolver.pids(tmp_path) == set() and resolver.stop(tmp_path) == []
