"""``corral stats HOST|CONTAINER [--since 15m]``: the current figures, or the last hour's history as a
table of rates under a CPU sparkline (docs/HISTORY.md)."""

from __future__ import annotations

import datetime
import itertools
import json
from typing import Any

import click

from agent.cli.client import ApiError, Client
from agent.cli.output import console, fail, table, url_option
from agent.node.history import rate

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """One bar per value, scaled from 0 to the largest (all low bars when everything is 0)."""
    top = max(values, default=0.0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] for v in values)


def size(n: float) -> str:
    """Bytes as people read them: 512 B, 1.5 KiB, 3.2 MiB, 1.1 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _path(client: Client, name: str) -> tuple[str, str]:
    """The stats path of a host named NAME, else of the container NAME names (its id or name)."""
    try:
        client.get(f"/v1/hosts/{name}")
        return f"/v1/hosts/{name}/stats", f"host {name}"
    except ApiError as exc:
        if exc.status != 404:
            raise
    try:
        container = client.get(f"/v1/containers/{name}")
    except ApiError as exc:
        if exc.status == 404:
            raise fail(f"no host or container named {name!r}") from None
        raise
    return f"/v1/containers/{container['id']}/stats", f"container {container.get('name') or container['id']}"


def _rows(samples: list[dict[str, Any]]) -> list[list[str | None]]:
    """Each sample with the network and disk rates since the one before it (the counters are cumulative;
    the first sample has none)."""
    rows: list[list[str | None]] = []
    for before, after in itertools.pairwise([None, *samples]):
        assert after is not None

        def per_second(group: str, field: str, b: dict[str, Any] | None = before, a: dict[str, Any] = after
                       ) -> str | None:
            return None if b is None else size(rate(b[group][field], a[group][field], a["t"] - b["t"])) + "/s"

        memory = after["memory"]
        rows.append([datetime.datetime.fromtimestamp(after["t"]).strftime("%H:%M:%S"), f"{after['cpu_percent']:.1f}",
                     f"{size(memory['usage'])} / {size(memory['limit'])}",
                     per_second("network", "rx_bytes"), per_second("network", "tx_bytes"),
                     per_second("block_io", "read_bytes"), per_second("block_io", "write_bytes")])
    return rows


@click.command("stats")
@click.argument("name")
@click.option("--since", default=None, metavar="DURATION|UNIX_TIME",
              help="the history from then on (15m, 3600s, 1h, or a unix time; at most the last hour) instead of "
                   "the current figures")
@click.option("--points", type=click.IntRange(2, 10_000), default=None,
              help="with --since: at most this many samples (consecutive ones averaged)")
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@url_option
def stats(name: str, since: str | None, points: int | None, as_json: bool, url: str) -> None:
    """CPU, memory, network and block I/O of host or container NAME (from its host's agent, asked through
    any node): now, or with --since the samples its agent keeps (one every 10 s, the last hour)."""
    client = Client(url)
    path, what = _path(client, name)
    body: dict[str, Any] = client.get(path, since=since, points=points)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    if since is None:
        memory, net, blk = body["memory"], body["network"], body["block_io"]
        table(what, ["cpu %", "memory", "net rx / tx", "block read / write"],
              [[f"{body['cpu_percent']:.1f}",
                size(memory["usage"]) + (f" / {size(memory['limit'])}" if memory.get("limit") else ""),
                f"{size(net['rx_bytes'])} / {size(net['tx_bytes'])}",
                f"{size(blk['read_bytes'])} / {size(blk['write_bytes'])}"]])
        return
    samples = body["samples"]
    if not samples:
        click.echo(f"{what}: no sample since {since} yet (one every {body['interval_seconds']:g} s)")
        return
    cpu = [s["cpu_percent"] for s in samples]
    console.print(f"{what}: {len(samples)} samples, every {body['interval_seconds']:g} s"
                  f"{' (averaged)' if points else ''}")
    console.print(f"cpu %  {sparkline(cpu)}  max {max(cpu):.1f}")
    table(f"{what} since {since}", ["time", "cpu %", "memory", "net rx", "net tx", "read", "write"], _rows(samples))


__all__ = ["sparkline", "stats"]
