"""Secrets in the agent loop, the run writer and the report, on a fake environment (no browser).

The attack: a secret reaches the model or the run directory through a channel other than typing:
the task text, an environment event, an action result, the page title and URL in a frame
caption, the model's own reply (echoed back to it on the next call), parse feedback that quotes
the reply cut short, the answer. References: the reference encoders of
``tests/test_secrets_redaction.py`` (standard library only) applied to every text of every
request the backend received and to the bytes of every file of the run directory. The control
runs the same episode with redaction switched off and finds the secret in both places.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote_plus

from test_loop import CONFIG, PROCESSOR, TOKENS, FakeEnv, Script, texts
from test_secrets_redaction import SECRET, forms, html, json_inner, prefix_chars, whatwg_form

from giraffe_agent.backends import ScriptedBackend
from giraffe_agent.envs.base import ActResult
from giraffe_agent.loop import Agent
from giraffe_agent.safety import Secrets
from giraffe_agent.trajectory import ParseInfo, RunMeta, RunResult, RunWriter, StepRecord, read_run

LEAKY_EVENT = f"a alert dialog said {SECRET!r} and was dismissed"
#: an action name that makes the parser quote the reply cut to 40 characters, ending in a prefix
LONG_NAME = "unknown-action-name-" + SECRET


class Unredacted(Secrets):
    """The control: the same secrets with redaction switched off."""

    def redact(self, obj):
        return obj

    def shorten(self, text, limit=200, *, ellipsis="..."):
        return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis


class LeakyEnv(FakeEnv):
    """The fake page echoes the secret: in its title and URL, in an event, in action results."""

    def _observe(self):
        obs = super()._observe()
        obs.url = f"http://127.0.0.1:9/echo?pw={whatwg_form(SECRET)}"
        obs.title = f"Welcome {SECRET}"
        obs.events = [LEAKY_EVENT]
        return obs

    async def act(self, action, transform):
        result = await super().act(action, transform)
        return ActResult(result.ok, f"typed {json.dumps(self.typed[-1]) if self.typed else '-'}")


REPLIES = [
    '{"action": "type", "text": "{{secret:PW}}", "x": 500, "y": 400}',
    json.dumps({"action": LONG_NAME}),  # parse error: the feedback quotes the name, cut short
    f"Thought: the page says {SECRET}.\n"
    + json.dumps({"action": "done", "text": f"{SECRET} | {quote_plus(SECRET)} | {html.escape(SECRET)}"}),
]


def run(tmp_path: Path, secrets: Secrets, name: str):
    script = Script(REPLIES)
    env = LeakyEnv(secrets=secrets)
    agent = Agent(f"Log in with the password {SECRET}.", env, ScriptedBackend(script), out_dir=tmp_path / name,
                  config=CONFIG.model_copy(update={"write_report": True}), processor=PROCESSOR, tokens=TOKENS,
                  secrets=secrets, approve=lambda action, obs: True)
    return agent.run(), env, script


def leaks(text: str) -> list[str]:
    """Every encoding of SECRET in ``text``, and every cut of one of MIN_PREFIX units or more."""
    found = [name for name, form in forms(SECRET).items() if form in text]
    shortest = prefix_chars(SECRET)
    for name, encode in (("raw", str), ("repr", lambda s: repr(s)[1:-1]), ("json", json_inner)):
        found += [f"{name} prefix {k}" for k in range(shortest, len(SECRET)) if encode(SECRET[:k]) + "..." in text]
    return found


def test_nothing_the_model_reads_or_the_run_writes_holds_the_secret(tmp_path):
    result, env, script = run(tmp_path, Secrets(PW=SECRET), "redacted")
    assert result.status == "done" and env.typed == [SECRET]  # the value was typed
    for request in script.requests:
        for text in texts(request):
            assert not leaks(text), (leaks(text), text)
    for value in (result.answer, result.error, json.dumps(result.info)):
        assert not leaks(str(value))
    assert result.answer.count("{{secret:PW}}") == 3
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"meta.json", "trajectory.jsonl", "result.json", "report.html"}
    for path in files:
        data = path.read_bytes()
        for name, form in forms(SECRET).items():
            assert form.encode("utf-8") not in data, (path.name, name)
        if path.suffix != ".png":
            assert not leaks(data.decode("utf-8")), (path.name, leaks(data.decode("utf-8")))
    steps = read_run(result.run_dir).steps
    assert steps[1].parse.ok is False and "{{secret:PW}}..." in steps[1].parse.error  # the cut was redacted


def test_control_without_redaction_the_same_run_leaks_everywhere(tmp_path):
    result, env, script = run(tmp_path, Unredacted(PW=SECRET), "control")
    assert result.status == "done" and env.typed == [SECRET]
    read = [text for request in script.requests for text in texts(request)]
    assert any(SECRET in text for text in read)  # task, caption, event, the model's own reply
    assert any(leaks(text) and "unknown action" in text for text in read)  # the cut feedback
    trajectory = (result.run_dir / "trajectory.jsonl").read_text("utf-8")
    assert leaks(trajectory) and leaks((result.run_dir / "report.html").read_text("utf-8"))


def test_the_run_writer_redacts_every_form_in_every_file(tmp_path):
    secrets = Secrets(PW=SECRET)
    encoded = list(forms(SECRET).values())
    with RunWriter.create(tmp_path / "run", redact=secrets.redact) as writer:
        writer.write_meta(RunMeta(task=" ".join(encoded[:50]), start_url="http://127.0.0.1/?" + encoded[3],
                                  backend="scripted", config={form: form for form in encoded[:40]}))
        for i, form in enumerate(encoded):
            writer.append_step(StepRecord(step=i, raw_output=form, parse=ParseInfo(ok=False, error=form[:20] + "..."),
                                          url=form, title=form, events=[form, form[:30] + "\u2026"]))
        writer.write_result(RunResult(status="done", answer=" ".join(encoded[50:]), steps=len(encoded)))
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            data = path.read_text("utf-8")
            assert not leaks(data), (path.name, leaks(data)[:5])
    # the control: the same records without redaction leak
    with RunWriter.create(tmp_path / "control") as writer:
        writer.append_step(StepRecord(step=0, raw_output=encoded[7], parse=ParseInfo(ok=True)))
    assert leaks((tmp_path / "control" / "trajectory.jsonl").read_text("utf-8"))
