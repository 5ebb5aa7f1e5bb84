"""Benchmark: how fast ``giraffe serve`` refuses attacks, and what the server's memory does meanwhile.

The tiny engine's app runs in a child process on a free loopback port (its memory is read from
``/proc/PID/status``: ``VmRSS`` now, ``VmHWM`` peak). Each case is sent ``--repeats`` times over one
keep-alive connection; the median and the worst wall-clock time per request are reported, with the
status the server answered:

* ``health``: ``GET /health`` (the floor: a round trip through uvicorn and the middleware);
* ``chat-2-tokens``: a valid text request generating 2 tokens (for scale);
* ``bomb``: one 12,000 x 12,000 one-bit PNG (~18 KB, 144 Mpx) as a data URL -> 413;
* ``six-bombs``: six of them in one request -> 413 at the first;
* ``prompt-5mb``: a 5,000,000-character prompt -> 413 before tokenizing;
* ``seed-2**80``: -> 400 from the schema;
* ``text-plain``: a valid body sent as ``text/plain`` (a cross-site "simple" POST) -> 415.

Then ``--bombs`` bomb requests, four at a time, and the growth of the peak RSS over idle.

    python benchmarks/server_admission.py                 # ~30 s on 2 cores
    python benchmarks/server_admission.py --repeats 50 --bombs 200 --json
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import statistics
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

_SERVE = """
import socket, uvicorn
from giraffe_core.engine import create_app, load
app = create_app(load("tiny"))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets TCP_NODELAY
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on")).run(sockets=[sock])
"""


def png_bomb(side: int) -> bytes:
    """A PNG of ``side`` x ``side`` black one-bit pixels, compressed row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + bytes((side + 7) // 8)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def cases(bomb_url: str) -> dict[str, dict[str, Any]]:
    """Each case's method, path, body and headers."""
    base = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": bomb_url}}]}]
    six = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": bomb_url}}] * 6}]
    return {
        "health": {"method": "GET", "path": "/health"},
        "chat-2-tokens": {"json": base},
        "bomb": {"json": {**base, "messages": image}},
        "six-bombs": {"json": {**base, "messages": six}},
        "prompt-5mb": {"json": {**base, "messages": [{"role": "user", "content": "x" * 5_000_000}]}},
        "seed-2**80": {"json": {**base, "seed": 2**80}},
        "text-plain": {"content": json.dumps(base), "headers": {"content-type": "text/plain"}},
    }


def time_case(client: httpx.Client, url: str, case: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Median and worst seconds of ``repeats`` requests, and the statuses seen."""
    times, statuses = [], set()
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.request(case.get("method", "POST"), url + case.get("path", "/v1/chat/completions"),
                                  json=case.get("json"), content=case.get("content"), headers=case.get("headers"))
        times.append(time.perf_counter() - start)
        statuses.add(response.status_code)
    return {"median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times), "status": sorted(statuses)}


def flood(client: httpx.Client, url: str, body: dict[str, Any], count: int) -> list[int]:
    """``count`` requests of ``body``, four at a time; their statuses."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: client.post(url + "/v1/chat/completions", json=body).status_code,
                             range(count)))


def run(repeats: int, bombs: int) -> dict[str, Any]:
    bomb = png_bomb(12_000)
    bomb_url = "data:image/png;base64," + base64.b64encode(bomb).decode()
    proc = subprocess.Popen([sys.executable, "-c", _SERVE], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}"  # type: ignore[union-attr]
        with httpx.Client(timeout=120) as client:
            while True:
                try:
                    client.get(url + "/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            table = cases(bomb_url)
            results = {name: time_case(client, url, case, repeats) for name, case in table.items()}
            idle = kib(proc.pid, "VmRSS")
            statuses = flood(client, url, table["bomb"]["json"], bombs)
            memory = {"idle_rss_mib": idle / 1024, "peak_after_mib": kib(proc.pid, "VmHWM") / 1024,
                      "rss_after_mib": kib(proc.pid, "VmRSS") / 1024, "bomb_requests": bombs,
                      "statuses": sorted(set(statuses)), "bomb_bytes": len(bomb)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": platform.platform(),
            "python": platform.python_version(), "repeats": repeats, "cases": results, "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="requests per case")
    parser.add_argument("--bombs", type=int, default=100, help="bomb requests for the memory measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    report = run(args.repeats, args.bombs)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"giraffe serve admission ({args.repeats} requests per case, loopback)")
    for column in ("case", "status", "median ms", "max ms"):
        table.add_column(column, justify="right")
    for name, row in report["cases"].items():
        table.add_row(name, ",".join(map(str, row["status"])), f"{row['median_ms']:.1f}", f"{row['max_ms']:.1f}")
    console = Console()
    console.print(table)
    memory = report["memory"]
    console.print(f"memory: idle RSS {memory['idle_rss_mib']:.0f} MiB; after {memory['bomb_requests']} bomb "
                  f"requests (statuses {memory['statuses']}): RSS {memory['rss_after_mib']:.0f} MiB, peak "
                  f"{memory['peak_after_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
