"""``giraffe serve``: the OpenAI-compatible server, tested with the official ``openai`` client on loopback.

References: the engine itself (``Engine.count_tokens`` for usage, greedy ``Engine.generate`` for the
text) on the equivalent Giraffe chat; the OpenAI error shape ``{"error": {message, type, param,
code}}``. Requests the client would refuse to send (malformed JSON, oversized bodies) go through
httpx directly. Servers run uvicorn in a background thread on a free 127.0.0.1 port.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from typer.testing import CliRunner

from giraffe_cli import app as cli_app
from giraffe_core.engine import Engine, GenerationStream, ServerConfig, create_app, load, serve
from giraffe_core.errors import MissingExtraError
from giraffe_core.samples import screenshot

# the server needs the serve extra, these tests the dev extra: pip install -e ".[serve,dev]"
_MISSING = "{} is not installed: pip install -e '.[serve,dev]'"
pytest.importorskip("fastapi", reason=_MISSING.format("fastapi"))
uvicorn = pytest.importorskip("uvicorn", reason=_MISSING.format("uvicorn"))
httpx = pytest.importorskip("httpx", reason=_MISSING.format("httpx"))
openai = pytest.importorskip("openai", reason=_MISSING.format("openai"))

GEN_SEED = 3  # seed 0's random model repeats one token; seed 3 gives varied text (see test_engine.py)
NEW = 6
SMALL_BODY = 64 * 1024
#: a prompt whose (random-weight) reply streams from its first tokens: TextIteratorStreamer holds
#: back text that ends in symbols until a space, and some replies have none for hundreds of tokens.
LONG_PROMPT = "Write a long essay."


# --------------------------------------------------------------------------------------------------
# fixtures: the engine, two servers, a loopback image host
# --------------------------------------------------------------------------------------------------


class _Server:
    """uvicorn serving ``app`` in a daemon thread on a free loopback port."""

    def __init__(self, app) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return load("tiny", seed=GEN_SEED)


@pytest.fixture(scope="module")
def server(engine) -> Iterator[_Server]:
    srv = _Server(create_app(engine))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict_server(engine) -> Iterator[_Server]:
    """A second app on the same engine: a 64 KiB body limit, remote URLs allowed, a queue of one.

    ``allow_private_addresses``: the test image host is on loopback, which the server refuses to
    fetch from unless told (test_server_remote.py shows the refusal)."""
    config = ServerConfig(max_body_bytes=SMALL_BODY, allow_remote_urls=True, remote_timeout_s=5,
                          max_pending_requests=1, allow_private_addresses=True)
    srv = _Server(create_app(engine, model_name="giraffe-tiny", config=config))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """448 x 336 px: 192 visual tokens at full resolution, more than the 80-token low tier."""
    return screenshot(448, 336, title="Checkout", seed=4)


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _image_message(url: str, text: str = "What is on this screen?", detail: str | None = None) -> list[dict]:
    image_url = {"url": url} if detail is None else {"url": url, "detail": detail}
    return [{"role": "user", "content": [{"type": "image_url", "image_url": image_url},
                                         {"type": "text", "text": text}]}]


def _giraffe_chat(image, text: str = "What is on this screen?", **part) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image, **part}, {"type": "text", "text": text}]}]


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def _chat_body(messages, model: str = "tiny", **extra) -> dict:
    return {"model": model, "messages": messages, "max_tokens": 2, "temperature": 0, **extra}


# --------------------------------------------------------------------------------------------------
# Engine.stream (the streaming path the server uses)
# --------------------------------------------------------------------------------------------------


def test_engine_stream_deltas_join_to_generate(engine, picture):
    chat = _giraffe_chat(picture, max_tokens=40)
    reference = engine.generate(chat, max_new_tokens=24)
    stream = engine.stream(chat, max_new_tokens=24)
    assert isinstance(stream, GenerationStream) and stream.result is None
    deltas = list(stream)
    assert all(deltas) and "".join(deltas) == reference.text
    assert stream.finished and stream.result == reference


def test_engine_stop_strings_cut_the_text_in_generate_and_stream(engine):
    chat = [{"role": "user", "content": "Tell me a story."}]
    full = engine.generate(chat, max_new_tokens=24)
    stop = full.text[5:7]
    assert len(full.text) > 7 and stop
    cut = engine.generate(chat, max_new_tokens=24, stop=[stop])
    assert cut.text == full.text[:full.text.index(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # decoding stopped there, not only the text
    stream = engine.stream(chat, max_new_tokens=24, stop=[stop])
    assert "".join(stream) == cut.text and stream.result == cut


def test_engine_stream_cancel_stops_decoding(engine):
    chat = [{"role": "user", "content": LONG_PROMPT}]
    stream = engine.stream(chat, max_new_tokens=2000)
    assert next(stream)  # this prompt streams from the first tokens on
    stream.cancel()
    list(stream)
    assert stream.finished and stream.result is not None and stream.result.completion_tokens < 2000
    at_once = engine.stream(chat, max_new_tokens=2000)
    at_once.cancel()
    list(at_once)
    assert at_once.result.completion_tokens == 1  # stopped after the first decoding step


def test_engine_stream_raises_the_models_error(engine, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("the model failed")

    monkeypatch.setattr(engine.model, "generate", boom)
    stream = engine.stream([{"role": "user", "content": "hi"}], max_new_tokens=3)
    with pytest.raises(RuntimeError, match="the model failed"):
        list(stream)
    assert stream.finished


# --------------------------------------------------------------------------------------------------
# the API with the openai client
# --------------------------------------------------------------------------------------------------


def test_models_lists_the_served_model(client, strict_server, http):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"] and models[0].object == "model"
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    named = http.get(f"{strict_server.url}/v1/models").json()
    assert [m["id"] for m in named["data"]] == ["giraffe-tiny"]


def test_text_chat_matches_the_engine(client, engine):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    reference = engine.generate(messages, max_new_tokens=NEW)
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=NEW, temperature=0)
    assert reply.object == "chat.completion" and reply.model == "tiny" and reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == reference.text
    assert choice.finish_reason == reference.finish_reason
    assert reply.usage.prompt_tokens == engine.count_tokens(messages) == reference.prompt_tokens
    assert reply.usage.completion_tokens == reference.completion_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # the developer role is the system role; max_completion_tokens is honoured like max_tokens
    as_developer = [{"role": "developer", "content": "You are terse."}, messages[1]]
    again = client.chat.completions.create(model="tiny", messages=as_developer, max_completion_tokens=NEW,
                                           temperature=0)
    assert again.choices[0].message.content == reference.text and again.usage == reply.usage


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_image_chat_via_data_url_matches_the_engine(client, engine, picture, fmt, mime):
    data = _encode(picture, fmt)
    decoded = Image.open(io.BytesIO(data)).convert("RGB")  # what the server sees (JPEG is lossy)
    chat = _giraffe_chat(decoded)
    reference = engine.generate(chat, max_new_tokens=NEW)
    reply = client.chat.completions.create(model="tiny", messages=_image_message(_data_url(data, mime)),
                                           max_tokens=NEW, temperature=0)
    assert reply.usage.prompt_tokens == engine.count_tokens(chat) == reference.prompt_tokens
    assert reply.usage.prompt_tokens > 192  # the 192 visual tokens are counted
    assert reply.choices[0].message.content == reference.text
    assert reply.usage.completion_tokens == reference.completion_tokens


def test_image_chat_via_local_path_and_file_url(engine, picture, tmp_path):
    # local paths are read only inside the folder the server is given (test_server_images.py: refusals)
    path = tmp_path / "screen shot.png"
    path.write_bytes(_encode(picture))
    chat = _giraffe_chat(str(path))
    reference = engine.generate(chat, max_new_tokens=NEW)
    srv = _Server(create_app(engine, config=ServerConfig(local_image_dir=tmp_path)))
    try:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=60)
        # a plain path, file:// (with %20 for the space), and a path relative to the folder
        for url in (str(path), path.as_uri(), path.name):
            reply = client.chat.completions.create(model="tiny", messages=_image_message(url), max_tokens=NEW,
                                                   temperature=0)
            assert reply.usage.prompt_tokens == engine.count_tokens(chat)
            assert reply.choices[0].message.content == reference.text
    finally:
        srv.stop()


def test_detail_low_uses_the_low_tier(client, engine, picture):
    url = _data_url(_encode(picture))
    usage = {detail: client.chat.completions.create(
        model="tiny", messages=_image_message(url, detail=detail), max_tokens=1, temperature=0).usage.prompt_tokens
        for detail in ("low", "high", "auto")}
    assert usage["low"] < usage["high"] == usage["auto"]
    assert usage["high"] == engine.count_tokens(_giraffe_chat(picture))
    assert usage["low"] == engine.count_tokens(_giraffe_chat(picture, max_tokens=ServerConfig().low_detail_tokens))


def test_streaming_joins_to_the_non_streaming_reply(client, picture):
    messages = _image_message(_data_url(_encode(picture)), "Describe it.")
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *content, last, usage = chunks
    assert "".join(c.choices[0].delta.content or "" for c in content) == plain.choices[0].message.content
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in content)
    assert last.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == [] and usage.usage == plain.usage
    without = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0,
                                                  stream=True))
    assert all(c.usage is None for c in without) and without[-1].choices[0].finish_reason is not None


def test_raw_stream_is_server_sent_events_ending_in_done(server, http):
    body = _chat_body([{"role": "user", "content": "hi"}], stream=True)
    with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_max_tokens_and_stop_set_the_finish_reason(client, engine):
    messages = [{"role": "user", "content": "Count to ten."}]
    full = engine.generate(messages, max_new_tokens=20)
    assert full.finish_reason == "length" and len(full.text) > 8
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 20
    stop = full.text[6:8]
    stopped = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0,
                                             stop=[stop, "never appears"])
    assert stopped.choices[0].message.content == full.text[:full.text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0,
                                              stop=stop, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == stopped.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sampling_with_a_seed_is_reproducible(client, engine):
    messages = [{"role": "user", "content": "Surprise me."}]
    args = {"model": "tiny", "messages": messages, "max_tokens": 12, "temperature": 1.3, "top_p": 0.9}
    a = client.chat.completions.create(**args, seed=7).choices[0].message.content
    b = client.chat.completions.create(**args, seed=7).choices[0].message.content
    reference = engine.generate(messages, max_new_tokens=12, do_sample=True, temperature=1.3, top_p=0.9, seed=7)
    assert a == b == reference.text
    assert reference.text != engine.generate(messages, max_new_tokens=12).text  # not greedy in disguise


# --------------------------------------------------------------------------------------------------
# errors: OpenAI-shaped, 4xx, and the server keeps serving
# --------------------------------------------------------------------------------------------------


def test_malformed_json_is_a_400_and_the_server_keeps_serving(server, http):
    for body in (b'{"model": "tiny", "messages": [', b"\xff\xfe", b"[1, 2]"):
        response = http.post(f"{server.url}/v1/chat/completions", content=body,
                             headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_json" and _error(response)["type"] == "invalid_request_error"
    ok = http.post(f"{server.url}/v1/chat/completions", json=_chat_body([{"role": "user", "content": "hi"}]))
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("url,code", [
    ("data:image/png;base64,iVBORw0K!!!not-base64", "invalid_base64"),
    ("data:image/png;base64," + base64.b64encode(b"these bytes are no image").decode(), "invalid_image"),
    ("data:text/plain;base64,aGVsbG8=", "invalid_image_url"),
    ("data:image/png,rawbytes", "invalid_image_url"),
    ("/no/such/image.png", "local_image_refused"),
    ("ftp://example.com/a.png", "invalid_image_url"),
])
def test_bad_images_are_400_naming_the_part(server, http, url, code):
    response = http.post(f"{server.url}/v1/chat/completions", json=_chat_body(_image_message(url)))
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == code and error["param"] == "messages[0].content[0]"
    assert error["message"].startswith("messages[0].content[0]: ")


def test_unsupported_content_part_is_a_400(server, http):
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "listen"}, audio]}]
    response = http.post(f"{server.url}/v1/chat/completions", json=_chat_body(messages))
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "unsupported_content_type" and error["param"] == "messages[0].content[1]"
    assert "'input_audio'" in error["message"] and "image_url" in error["message"]


@pytest.mark.parametrize("change,param,words", [
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'user'"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or a list"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]", "'type'"),
    ({"n": 2}, "n", "n must be 1"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
    ({"temperature": 3}, "temperature", "less than or equal to 2"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"response_format": {"type": "json_object"}}, "response_format", "json_object"),
])
def test_schema_errors_are_400_naming_the_field(server, http, change, param, words):
    body = {**_chat_body([{"role": "user", "content": "hi"}]), **change}
    response = http.post(f"{server.url}/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["param"] == param and words in error["message"], error


def test_missing_model_field_is_a_400(server, http):
    response = http.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and _error(response)["param"] == "model"


def test_remote_urls_are_refused_by_default(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=_image_message("https://example.com/cat.png"))
    assert info.value.status_code == 400 and info.value.code == "remote_urls_disabled"
    assert "--allow-remote-urls" in info.value.message and "data: URL" in info.value.message


class _ImageHandler(BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        if self.path == "/screen.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            self.wfile.write(self.payload)
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def image_host(picture) -> Iterator[str]:
    _ImageHandler.payload = _encode(picture)
    host = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{host.server_address[1]}"
    host.shutdown()
    host.server_close()
    thread.join()


def test_remote_url_is_fetched_when_allowed(strict_server, image_host, engine, picture, http):
    url = f"{strict_server.url}/v1/chat/completions"
    response = http.post(url, json=_chat_body(_image_message(f"{image_host}/screen.png"), model="giraffe-tiny"))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == engine.count_tokens(_giraffe_chat(picture))
    missing = http.post(url, json=_chat_body(_image_message(f"{image_host}/gone.png"), model="giraffe-tiny"))
    assert missing.status_code == 400 and _error(missing)["code"] == "image_fetch_failed"
    assert "404" in _error(missing)["message"]
    local = http.post(url, json=_chat_body(_image_message("/tmp/x.png"), model="giraffe-tiny"))
    assert local.status_code == 400 and _error(local)["code"] == "local_image_refused"


@pytest.mark.slow
def test_context_over_the_budget_is_context_length_exceeded(client, engine):
    big = _data_url(_encode(Image.new("RGB", (1920, 1080), (30, 60, 90))))  # 1,222 tokens each
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": big}}] * 4}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=messages)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert f"maximum context length is {engine.context_length} tokens" in info.value.message
    one = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": big}}]}]
    room = engine.context_length - engine.count_tokens(_giraffe_chat(Image.new("RGB", (1920, 1080)), text=""))
    assert room > 1
    with pytest.raises(openai.BadRequestError) as info:  # the prompt fits, the prompt plus max_tokens does not
        client.chat.completions.create(model="tiny", messages=one, max_tokens=room + 1)
    assert info.value.code == "context_length_exceeded" and f"{room + 1} in the completion" in info.value.message
    fits = client.chat.completions.create(model="tiny", messages=one, max_tokens=1, temperature=0)
    assert fits.usage.prompt_tokens == engine.context_length - room


def test_body_over_the_limit_is_a_413_whatever_the_headers_say(strict_server, http):
    url = f"{strict_server.url}/v1/chat/completions"
    small = _chat_body([{"role": "user", "content": "hi"}], model="giraffe-tiny")
    padded = {**small, "messages": [{"role": "user", "content": "x" * (SMALL_BODY + 1000)}]}
    declared = http.post(url, json=padded)
    assert declared.status_code == 413 and _error(declared)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        data = json.dumps(padded).encode()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    streamed = http.post(url, content=chunked(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "limit of 65536 bytes" in _error(streamed)["message"]
    assert http.post(url, json=small).status_code == 200  # and it still serves


def test_unknown_model_and_route_are_404(client, server, http):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found" and "'tiny'" in info.value.message
    missing = http.get(f"{server.url}/v1/nothing/here")
    assert missing.status_code == 404 and _error(missing)["code"] == "not_found"
    wrong_method = http.get(f"{server.url}/v1/chat/completions")
    assert wrong_method.status_code == 405 and _error(wrong_method)["type"] == "invalid_request_error"


def test_model_failures_are_500_and_the_server_keeps_serving(client, engine, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("out of memory (simulated)")

    messages = [{"role": "user", "content": "hi"}]
    with monkeypatch.context() as patch:
        patch.setattr(engine.model, "generate", boom)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
        assert info.value.status_code == 500 and "simulated" in info.value.message
        stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, stream=True)
        with pytest.raises(openai.APIError, match="simulated"):
            list(stream)
    assert client.chat.completions.create(model="tiny", messages=messages, max_tokens=2).choices


# --------------------------------------------------------------------------------------------------
# queuing
# --------------------------------------------------------------------------------------------------


def test_parallel_requests_equal_sequential_ones(client, picture):
    url = _data_url(_encode(picture))
    requests = [
        {"messages": [{"role": "user", "content": "First question."}], "max_tokens": 16, "temperature": 0},
        {"messages": _image_message(url, "What is here?"), "max_tokens": 16, "temperature": 0},
        {"messages": _image_message(url, "And in low detail?", detail="low"), "max_tokens": 16, "temperature": 0},
        {"messages": [{"role": "user", "content": "Sample this."}], "max_tokens": 16, "temperature": 1.1,
         "seed": 5},
        {"messages": [{"role": "user", "content": "Stream this."}], "max_tokens": 16, "temperature": 0,
         "stream": True, "stream_options": {"include_usage": True}},
    ]

    def run(kwargs: dict) -> tuple[str, int, int]:
        reply = client.chat.completions.create(model="tiny", **kwargs)
        if kwargs.get("stream"):
            chunks = list(reply)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return text, chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens
        return reply.choices[0].message.content, reply.usage.prompt_tokens, reply.usage.completion_tokens

    sequential = [run(r) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        parallel = list(pool.map(run, requests * 2))
    assert parallel == sequential * 2
    assert len({text for text, _, _ in sequential}) > 1


def test_models_answers_while_a_generation_runs_and_a_gone_client_cancels_it(server, http, caplog):
    body = _chat_body([{"role": "user", "content": LONG_PROMPT}], max_tokens=3500, stream=True)
    with caplog.at_level(logging.INFO, logger="giraffe_core.engine.server"):
        with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if '"content": "' in line and '"content": ""' not in line)
            started = time.perf_counter()
            models = http.get(f"{server.url}/v1/models")
            assert models.status_code == 200 and models.json()["data"][0]["id"] == "tiny"
            assert time.perf_counter() - started < 1.0
        # the client closed the stream: the generation stops at the next token and frees the worker
        deadline = time.monotonic() + 30
        while not any("cancelled after" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    cancelled = next(r.getMessage() for r in caplog.records if "cancelled after" in r.getMessage())
    assert int(cancelled.split("cancelled after ")[1].split()[0]) < 3500  # it was still running when /models answered
    ok = http.post(f"{server.url}/v1/chat/completions", json=_chat_body([{"role": "user", "content": "hi"}]))
    assert ok.status_code == 200


def test_a_full_queue_is_a_503_not_a_crash(strict_server, http):
    url = f"{strict_server.url}/v1/chat/completions"
    long = _chat_body([{"role": "user", "content": LONG_PROMPT}], model="giraffe-tiny", max_tokens=3500, stream=True)
    short = _chat_body([{"role": "user", "content": "hi"}], model="giraffe-tiny")
    with http.stream("POST", url, json=long) as response:
        next(line for line in response.iter_lines() if line.startswith("data: "))
        busy = http.post(url, json=short)  # the queue holds one request, and it is running
        assert busy.status_code == 503 and _error(busy)["code"] == "server_busy"
    deadline = time.monotonic() + 30
    while (answer := http.post(url, json=short)).status_code == 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert answer.status_code == 200


# --------------------------------------------------------------------------------------------------
# packaging and the command line
# --------------------------------------------------------------------------------------------------


def test_missing_fastapi_or_uvicorn_names_the_serve_extra(engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'giraffe\[serve\]'"):
        create_app(engine)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(MissingExtraError, match=r"giraffe\[serve\]"):
        serve(engine, port=1)


@pytest.mark.slow
def test_importing_giraffe_core_does_not_import_the_server_stack():
    script = ("import sys, giraffe_core, giraffe_core.engine.server\n"
              "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_server_config_rejects_unknown_and_invalid_settings():
    with pytest.raises(ValueError, match="extra"):
        ServerConfig(max_body=10)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ServerConfig(max_body_bytes=0)
    assert ServerConfig().max_body_bytes == 20 * 1024 * 1024 and not ServerConfig().allow_remote_urls


@pytest.mark.slow
def test_cli_serve_runs_a_server(tmp_path):
    help_text = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "250"}).output
    for option in ("--model", "--host", "--port", "--context-length", "--rope", "--max-body-mb",
                   "--allow-remote-urls", "--image-dir", "--name", "--api-key", "--allowed-host", "--cors-origin",
                   "--allow-unauthenticated-remote", "--max-image-pixels", "--max-request-pixels", "--max-images",
                   "--max-prompt-chars", "--max-pending"):
        assert option in help_text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from giraffe_cli import main; main()", "serve", "--port", str(port),
             "--name", "giraffe-tiny", "--context-length", "8192", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                models = client.models.list().data
                break
            except openai.APIConnectionError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "giraffe serve did not come up"
                time.sleep(0.2)
        assert [m.id for m in models] == ["giraffe-tiny"] and models[0].model_extra["context_length"] == 8192
        reply = client.chat.completions.create(model="giraffe-tiny", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=3, temperature=0)
        assert 1 <= reply.usage.completion_tokens <= 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (so the status is -SIGTERM)
    assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in log.read_text(), log.read_text()
