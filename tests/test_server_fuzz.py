"""A bounded, seeded fuzz of every ``giraffe serve`` endpoint against the tiny engine on loopback.

Every input is built to be invalid (wrong types, huge, negative and non-finite numbers, deeply
nested or truncated JSON, garbage bytes, truncated base64, non-image bytes, decompression bombs,
wrong content types, methods, routes and Host headers, oversized headers and bodies). Every answer
must be a 4xx with an OpenAI-shaped JSON error, ``/health`` must answer after every case, and the
process's peak memory must stay within 200 MB of where it started.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from giraffe_core.engine import create_app
from giraffe_core.samples import screenshot

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_server_support import LoopbackServer, encode, openai_error, png_bomb, proc_status_kib  # noqa: E402

SEED = 20_240_611
CASES = 320
BOUND_KIB = 200 * 1024
BASE = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@dataclass
class Case:
    family: str
    body: bytes = b""
    method: str = "POST"
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


def _json(body: dict) -> bytes:
    return json.dumps(body).encode()


# --------------------------------------------------------------------------------------------------
# the generators: each returns an invalid request
# --------------------------------------------------------------------------------------------------

#: values that are wrong for the field whatever pydantic's lax coercion does
WRONG = {
    "model": [5, None, [], {}, "gpt-4o", "x" * 10_000, ["tiny"]],
    "messages": ["hi", 5, None, [], [1], [{"role": "robot", "content": "x"}], [{"role": "user"}],
                 [{"role": "user", "content": 5}], [{"role": "user", "content": [{"type": "video"}]}],
                 [{"role": "user", "content": [{"type": "image_url"}]}], [{"role": "user", "content": [{}]}],
                 [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}],
                 [{"role": "tool", "content": "x"}], {"role": "user", "content": "x"}],
    "max_tokens": ["many", 0, -5, 2**31, 2**80, -(2**80), 1.5, 10**6, [], {}, 4096],
    "max_completion_tokens": [0, -1, 2**63, "x", 4096, 1.25],
    "temperature": ["hot", -0.1, 2.5, 1e308, -1e308, [], {}, "NaN", "inf", "-inf"],
    "top_p": [0, -1, 1.5, "x", "nan", [], 0.0],
    "seed": [2**64, -(2**63) - 1, 2**80, "x", 1.5, [], {}, "inf"],
    "stop": [5, [1], ["a"] * 5, [""], "x" * 1001, {"a": "b"}, [None]],
    "stream": ["maybe", 2, [], {}, -1],
    "stream_options": ["x", 5, [1], {"include_usage": "maybe"}],
    "n": [2, 0, -1, 2**80, "x", 1.5],
    "logprobs": [True], "top_logprobs": [3, 2**80], "tools": [[{"type": "function"}]], "tool_choice": ["auto"],
    "response_format": [{"type": "json_object"}, {"type": 5}], "logit_bias": [{"1": 5}],
    "presence_penalty": [1.0, "x"], "frequency_penalty": [-2.0], "modalities": [["audio"]], "audio": [{}],
}


def wrong_type(rng: random.Random, assets: dict) -> Case:
    name = rng.choice(sorted(WRONG))
    return Case(f"field:{name}", _json({**BASE, name: rng.choice(WRONG[name])}))


def non_json_number(rng: random.Random, assets: dict) -> Case:
    literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * rng.randint(4301, 9000)])
    name = rng.choice(["seed", "max_tokens", "temperature", "top_p", "n"])
    return Case("json:number", json.dumps({**BASE, name: 12345}).replace("12345", literal).encode())


def deep_nesting(rng: random.Random, assets: dict) -> Case:
    depth = rng.randint(2_000, 200_000)
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    nested = opener * depth + "1" + closer * depth
    where = rng.choice(["body", "tool_choice", "content", "stop"])
    if where == "body":
        return Case("json:deep", nested.encode())
    return Case("json:deep", json.dumps({**BASE, where: 0}).replace(f'"{where}": 0', f'"{where}": {nested}').encode())


def truncated_json(rng: random.Random, assets: dict) -> Case:
    body = _json({**BASE, "messages": [{"role": "user", "content": "hello " * rng.randint(1, 50)}]})
    return Case("json:truncated", body[: rng.randint(0, len(body) - 1)])


def garbage(rng: random.Random, assets: dict) -> Case:
    kind = rng.choice(["random", "utf8", "overlong", "scalar"])
    if kind == "random":
        return Case("json:garbage", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000))))
    if kind == "utf8":
        return Case("json:garbage", b'{"model": "tiny\xff\xfe", "messages": []}')
    if kind == "overlong":  # an overlong UTF-8 encoding of "." (a byte sequence no decoder may accept)
        return Case("json:garbage", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xc0\xae"}]}')
    return Case("json:garbage", rng.choice([b"[]", b'"x"', b"5", b"null", b"true", b"[{}]"]))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose data is an empty stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bad_image(rng: random.Random, assets: dict) -> Case:
    png_b64 = base64.b64encode(assets["png"]).decode()
    options: list[Callable[[], str]] = [
        lambda: "data:image/png;base64," + png_b64[: rng.randint(1, len(png_b64) - 1)],  # truncated base64
        lambda: "data:image/png;base64," + base64.b64encode(rng.randbytes(rng.randint(1, 4000))).decode(),
        lambda: "data:image/png;base64," + base64.b64encode(rng.choice(assets["bombs"])).decode(),
        lambda: "data:image/png;base64," + base64.b64encode(_png_header(rng.randint(4100, 2**31 - 1),
                                                                        rng.randint(4100, 2**31 - 1))).decode(),
        lambda: "data:image/png;base64," + base64.b64encode(_png_header(0, rng.randint(0, 10))).decode(),
        lambda: "data:image/gif;base64," + base64.b64encode(assets["animated"]).decode(),
        lambda: "data:image/tiff;base64," + base64.b64encode(assets["tiff"]).decode(),
        lambda: "data:text/plain;base64,aGVsbG8=",
        lambda: "data:image/png," + "x" * rng.randint(1, 100),
        lambda: "data:image/png;base64,!!!" + png_b64[:40],
        lambda: rng.choice(["ftp://example.com/a.png", "gopher://x", "javascript:alert(1)", "ws://127.0.0.1/"]),
        lambda: rng.choice(["/etc/passwd", "../../etc/shadow", "file:///etc/hostname", "~/.ssh/id_rsa", "C:\\x"]),
        lambda: rng.choice(["http://127.0.0.1:1/a.png", "https://169.254.169.254/latest/meta-data"]),
    ]
    url = rng.choice(options)()
    detail = rng.choice(["auto", "low", "high"])
    content = [{"type": "image_url", "image_url": {"url": url, "detail": detail}}, {"type": "text", "text": "?"}]
    body = {**BASE, "messages": [{"role": "user", "content": content}], "stream": rng.random() < 0.3}
    return Case("image", _json(body))


def content_type(rng: random.Random, assets: dict) -> Case:
    kind = rng.choice(["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                       "multipart/form-data; boundary=zz", "application/xml", "application/jsonx", "", None])
    headers = {} if kind is None else {"content-type": kind}
    return Case("content-type", _json(BASE), headers=headers)


def route(rng: random.Random, assets: dict) -> Case:
    paths = ["/health", "/v1/models", "/v1/models/tiny", "/v1/chat/completions"]
    kind = rng.choice(["method", "unknown", "model"])
    if kind == "method":
        path = rng.choice(paths)
        method = rng.choice(["PUT", "DELETE", "PATCH"] + (["GET"] if path.endswith("completions") else ["POST"]))
        return Case("route:method", _json(BASE), method=method, path=path)
    if kind == "unknown":
        tail = "".join(rng.choice("abcxyz_-/") for _ in range(rng.randint(1, 60)))
        return Case("route:unknown", b"", method=rng.choice(["GET", "POST"]), path=f"/v1/{tail}x")
    return Case("route:model", b"", method="GET", path=f"/v1/models/{rng.randbytes(8).hex()}", headers={})


def bad_host(rng: random.Random, assets: dict) -> Case:
    host = rng.choice(["attacker.example", "attacker.example:8000", "127.0.0.1:1", "localhost.attacker.example",
                       "[::2]", "", "x" * 300, "127.0.0.1:99999", "[::1"])
    return Case("host", _json(BASE), method=rng.choice(["GET", "POST"]),
                path=rng.choice(["/health", "/v1/models", "/v1/chat/completions"]),
                headers={"content-type": "application/json", "host": host})


def big_headers(rng: random.Random, assets: dict) -> Case:
    size = rng.choice([rng.randint(8_000, 60_000), rng.randint(66_000, 150_000)])  # a few MB: uvicorn cuts
    headers = {"content-type": "application/json", "x-padding": "a" * size}
    return Case("headers", _json({**BASE, "model": 5}), headers=headers)


def big_text(rng: random.Random, assets: dict) -> Case:
    chars = rng.choice([rng.randint(32_769, 200_000), 5_000_000])
    return Case("size:prompt", _json({**BASE, "messages": [{"role": "user", "content": "z" * chars}]}))


GENERATORS = [wrong_type, wrong_type, wrong_type, non_json_number, deep_nesting, truncated_json, garbage,
              bad_image, bad_image, bad_image, content_type, route, bad_host, big_headers, big_text]


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets() -> dict:
    frames = [Image.new("RGB", (32, 24), c) for c in ((255, 0, 0), (0, 0, 255))]
    return {
        "png": encode(screenshot(112, 84, seed=9)),
        "bombs": [png_bomb(12_000, 12_000), png_bomb(4_200, 4_200), png_bomb(20_000, 1_000)],
        "animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0),
        "tiff": encode(frames[0], "TIFF"),
    }


@pytest.fixture(scope="module")
def server(tiny_engine) -> Iterator[LoopbackServer]:
    srv = LoopbackServer(create_app(tiny_engine))
    yield srv
    srv.stop()


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _oversized_body(srv: LoopbackServer, http: httpx.Client) -> httpx.Response:
    return http.post(f"{srv.url}/v1/chat/completions", content=b"{" + b" " * (20 * 1024 * 1024),
                     headers={"content-type": "application/json"})


def _protocol_level_header_flood(srv: LoopbackServer) -> bytes:
    """4 MB of one header line: uvicorn cuts the connection (or answers 400) before the app sees it."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {srv.host_header}\r\nX-Flood: ".encode())
        try:
            for _ in range(4):
                sock.sendall(b"a" * 1_000_000)
            return sock.recv(200)
        except OSError:
            return b"reset"


@pytest.mark.slow
def test_fuzz_every_endpoint_gets_a_4xx_json_error(server, assets, capsys):
    rng = random.Random(SEED)
    cases = [gen(rng, assets) for gen in GENERATORS] + [rng.choice(GENERATORS)(rng, assets)
                                                        for _ in range(CASES - len(GENERATORS))]
    outcomes: Counter[tuple[str, int, str]] = Counter()
    rss_before, peak_tracked = proc_status_kib(os.getpid(), "VmRSS"), _reset_peak()
    with httpx.Client(timeout=60) as http:
        for case in cases:
            response = http.request(case.method, f"{server.url}{case.path}", content=case.body or None,
                                    headers=case.headers)
            assert 400 <= response.status_code < 500, (case.family, case.path, response.status_code,
                                                       response.text[:300], case.body[:200])
            family = case.family.split(":")[0]
            if family in ("host", "headers") and response.text == "Invalid HTTP request received.":
                code = "not-http (uvicorn)"  # h11 refuses a head that is not HTTP before our app sees it
            else:
                code = openai_error(response)["code"]
            outcomes[(family, response.status_code, code)] += 1
            assert http.get(f"{server.url}/health").status_code == 200, case.family
        oversized = _oversized_body(server, http)
        assert oversized.status_code == 413 and openai_error(oversized)["code"] == "request_too_large"
        flood = _protocol_level_header_flood(server)
        assert flood == b"reset" or flood.startswith(b"HTTP/1.1 4"), flood
        assert http.get(f"{server.url}/health").status_code == 200
        assert http.post(f"{server.url}/v1/chat/completions", json=BASE).status_code == 200  # still serving
    growth = proc_status_kib(os.getpid(), "VmHWM" if peak_tracked else "VmRSS") - rss_before
    with capsys.disabled():
        print(f"\n[fuzz] {len(cases)} cases + 1 oversized body + 1 header flood (seed {SEED}); "
              f"memory growth {'(peak)' if peak_tracked else '(RSS)'} {growth / 1024:.1f} MiB")
        for (family, status, code), count in sorted(outcomes.items()):
            print(f"  {family:14s} {status} {code:28s} {count}")
    assert sum(outcomes.values()) == len(cases)
    assert growth < BOUND_KIB
