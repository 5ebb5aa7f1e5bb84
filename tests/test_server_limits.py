"""``giraffe serve``: numbers out of range and oversized requests are refused at once, before the worker.

The attacks: ``seed`` 2**80 (a 500 from ``torch.manual_seed`` before), a 5 MB prompt (held the
worker 4.8 s before a refusal), NaN and infinities, huge ``max_tokens``, a full queue of slow
bodies. To show a refusal never reached the worker, the worker is held busy (its image decoding
waits on an event) while the bad requests are answered; controls are answered normally.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from giraffe_core.engine import ServerConfig, create_app, server_chat
from giraffe_core.samples import screenshot

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_server_support import LoopbackServer, chat_body, data_url, encode, image_message, openai_error  # noqa: E402

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


@pytest.fixture()
def held(tiny_engine, http, monkeypatch) -> Iterator[tuple[LoopbackServer, threading.Event]]:
    """A server whose worker is busy decoding one image until the event is set."""
    release, decoding = threading.Event(), threading.Event()
    real = server_chat.decode

    def slow_decode(image):
        decoding.set()
        assert release.wait(60), "the test never released the worker"
        return real(image)

    monkeypatch.setattr(server_chat, "decode", slow_decode)
    srv = LoopbackServer(create_app(tiny_engine))
    busy_body = chat_body(image_message(data_url(encode(screenshot(112, 112, seed=1)))))
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(http.post, f"{srv.url}/v1/chat/completions", json=busy_body)
        assert decoding.wait(60)
        try:
            yield srv, release
        finally:
            release.set()
            assert busy.result().status_code == 200  # the held request itself completes
            srv.stop()


@pytest.mark.parametrize("change,status,code,param", [
    ({"seed": 2**80}, 400, "invalid_value", "seed"),
    ({"seed": -(2**63) - 1}, 400, "invalid_value", "seed"),
    ({"max_tokens": 2**80}, 400, "invalid_value", "max_tokens"),
    ({"max_tokens": 10**6}, 400, "context_length_exceeded", "max_tokens"),
    ({"max_completion_tokens": 4096}, 400, "context_length_exceeded", "max_completion_tokens"),
    ({"temperature": "inf"}, 400, "invalid_value", "temperature"),
    ({"top_p": "-inf"}, 400, "invalid_value", "top_p"),
    ({"temperature": "NaN"}, 400, "invalid_value", "temperature"),
    ({"n": 2**80}, 400, "invalid_value", "n"),
    ({"top_logprobs": 2**80}, 400, "invalid_value", "top_logprobs"),
    ({"stop": ["x" * 1001]}, 400, "invalid_value", "stop"),
    ({"messages": [{"role": "user", "content": "x" * 5_000_000}]}, 413, "prompt_too_large", "messages"),
    ({"messages": image_message(*["data:image/png;base64,AAAA"] * 1025)}, 413, "too_many_images", "messages"),
])
def test_out_of_range_requests_are_refused_while_the_worker_is_busy(held, http, change, status, code, param):
    srv, release = held
    response = http.post(f"{srv.url}/v1/chat/completions", json={**chat_body(HI), **change})
    assert not release.is_set()  # answered while the worker was still held: never queued
    assert response.status_code == status, response.text[:300]
    error = openai_error(response)
    assert (error["code"], error["param"]) == (code, param)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" * 5000])
def test_non_json_numbers_are_400(held, http, literal):
    srv, release = held
    body = json.dumps(chat_body(HI, seed=12345)).replace("12345", literal)
    response = http.post(f"{srv.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert not release.is_set() and response.status_code == 400
    assert openai_error(response)["code"] in ("invalid_json", "invalid_value")


def test_the_prompt_limit_names_the_limit_and_the_control_passes_it(tiny_engine, http):
    srv = LoopbackServer(create_app(tiny_engine))
    limit = 8 * tiny_engine.context_length
    try:
        url = f"{srv.url}/v1/chat/completions"
        over = http.post(url, json=chat_body([{"role": "user", "content": "x" * (limit + 1)}]))
        under = http.post(url, json=chat_body([{"role": "user", "content": "x" * limit}]))
        seeded = http.post(f"{srv.url}/v1/chat/completions", json=chat_body(HI, seed=2**64 - 1, temperature=1))
    finally:
        srv.stop()
    assert over.status_code == 413 and f"limit of {limit} characters" in openai_error(over)["message"]
    # control: at the limit the text is admitted, tokenized, and found too long for the context
    assert under.status_code == 400 and openai_error(under)["code"] == "context_length_exceeded"
    assert seeded.status_code == 200  # the largest seed torch takes is accepted


def _answer(sock: socket.socket) -> str:
    """What the server sent on a raw connection until it closed it (or 30 s passed)."""
    sock.settimeout(30)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data.decode()


@pytest.mark.slow
def test_a_full_queue_answers_503_before_reading_bodies(tiny_engine, http):
    srv = LoopbackServer(create_app(tiny_engine, config=ServerConfig(max_pending_requests=2, body_timeout_s=2)))
    slow = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
    try:
        for sock in slow:  # two clients that announce a body and never send it: both slots are taken
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {srv.host_header}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
        deadline = time.monotonic() + 30
        while (busy := http.post(f"{srv.url}/v1/chat/completions", json=chat_body(HI))).status_code != 503:
            assert time.monotonic() < deadline, busy.text  # the slow clients' requests have to arrive first
            time.sleep(0.05)
        assert openai_error(busy)["code"] == "server_busy"
        assert http.get(f"{srv.url}/health").status_code == 200
        answers = [_answer(sock) for sock in slow]  # after body_timeout_s: 408, and the slots are free again
        assert all(a.startswith("HTTP/1.1 408") and "request_timeout" in a for a in answers), answers
        assert http.post(f"{srv.url}/v1/chat/completions", json=chat_body(HI)).status_code == 200
    finally:
        for sock in slow:
            sock.close()
        srv.stop()


def test_a_client_that_leaves_mid_body_frees_its_slot_without_an_error_log(tiny_engine, http, caplog):
    srv = LoopbackServer(create_app(tiny_engine, config=ServerConfig(max_pending_requests=1)))
    try:
        with caplog.at_level("INFO", logger="giraffe_core.engine.server"):
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {srv.host_header}\r\n"
                             "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
            deadline = time.monotonic() + 30
            while not any("disconnected" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            ok = http.post(f"{srv.url}/v1/chat/completions", json=chat_body(HI))  # the one slot is free again
    finally:
        srv.stop()
    assert ok.status_code == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
