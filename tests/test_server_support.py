"""Helpers shared by the ``giraffe serve`` hardening tests (test_server_*.py); this module holds no tests.

* :class:`LoopbackServer`: an app in uvicorn on a free 127.0.0.1 port, in a thread, stopped by ``stop()``.
* :class:`ServerProcess`: ``giraffe serve``'s app in a child process (its own memory, read from /proc).
* :func:`png_bomb`: a PNG of many one-bit pixels in a few KB, written row by row (never decoded here).
* :func:`openai_error`: the error object of a response, asserting OpenAI's shape.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import uvicorn
from PIL import Image

__all__ = ["LoopbackServer", "ServerProcess", "chat_body", "data_url", "encode", "image_message", "openai_error",
           "png_bomb", "proc_status_kib"]


class LoopbackServer:
    """uvicorn serving ``app`` in a daemon thread on a free port of ``host`` (a loopback address)."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        # IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (no 40 ms Nagle stalls)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind((host, 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.host_header = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"http://{self.host_header}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def proc_status_kib(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (``VmRSS``: resident now, ``VmHWM``: peak resident), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


_SERVE_SCRIPT = """
import json, socket, sys
import uvicorn
from PIL import Image
from giraffe_core.engine import ServerConfig, create_app, load
settings = json.loads(sys.argv[1])
if settings.pop("pillow_unlimited", False):
    Image.MAX_IMAGE_PIXELS = None
app = create_app(load("tiny"), config=ServerConfig(**settings))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])
"""


class ServerProcess:
    """The tiny engine's app with ``ServerConfig(**settings)`` in a child process on a free loopback port.

    ``settings["pillow_unlimited"]`` lifts Pillow's own ``Image.MAX_IMAGE_PIXELS`` in the child.
    """

    def __init__(self, settings: dict[str, Any], log: Path) -> None:
        self._log = log.open("w")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE_SCRIPT, json.dumps(settings)],
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.strip().isdigit(), f"the server process did not start: {log.read_text()[-2000:]}"
        self.url = f"http://127.0.0.1:{int(line)}"

    def wait_until_up(self, client: Any) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get(f"{self.url}/health").status_code == 200:
                    return
            except Exception:  # not listening yet
                assert self.proc.poll() is None and time.monotonic() < deadline, "the server process died"
            time.sleep(0.1)

    def kib(self, field: str) -> int:
        return proc_status_kib(self.proc.pid, field)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black one-bit pixels, compressed row by row (no image in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte 0, then the row's bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(*urls: str, text: str = "What is on this screen?") -> list[dict]:
    parts: list[dict] = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def chat_body(messages: list[dict], model: str = "tiny", **extra: Any) -> dict:
    return {"model": model, "messages": messages, "max_tokens": 2, "temperature": 0, **extra}


def openai_error(response: Any) -> dict:
    """The ``error`` object of ``response``, asserting it is OpenAI's ``{"error": {message, type, param, code}}``."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:300]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]
