"""Replaying a run directory, which may come from someone else: what is taken from it, and what is not.

A run directory is untrusted (people share them in bug reports and datasets). Its ``meta.json``
records everything the run was launched with, but a replay takes from it only what the replay
itself needs, validated (:class:`ReplaySetup`):

* the task text and the loop settings (:class:`~giraffe_agent.loop.AgentConfig`: prompts, memory,
  coordinate space; nothing in it names a binary, a flag, a path or a host);
* the environment's kind: a web page by its start URL (``http``/``https``; ``file`` only when the
  replaying user's own policy allows file URLs), or a MiniWoB++ task by name and seed, served by
  the replaying user's own loopback server;
* the viewport (CSS px) and the device scale factor, within :data:`MAX_REPLAY_PIXELS` device pixels.

Everything else it recorded (the browser binary, Chromium flags, the download folder, the safety
policy, timeouts) is listed in :attr:`ReplaySetup.not_applied` as "recorded, not applied": the
browser, its flags and the safety policy come from the replaying user
(:func:`replay_environment`). The actions come from the recorded model outputs, parsed and checked
like any model output (:class:`~giraffe_agent.backends.ReplayBackend`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from giraffe_agent.envs.browser import BrowserConfig, BrowserEnv
from giraffe_agent.loop import AgentConfig
from giraffe_agent.safety import SafetyPolicy
from giraffe_agent.trajectory import RunMeta, TrajectoryError
from giraffe_core.errors import InputError

__all__ = ["MAX_REPLAY_PIXELS", "ReplaySetup", "replay_environment", "replay_setup"]

#: most device pixels (width x height x scale^2) of a replayed viewport: 8K, 7680 x 4320
MAX_REPLAY_PIXELS = 7680 * 4320
_TASK_NAME = r"^[a-z0-9][a-z0-9-]{0,63}$"
_APPLIED_BROWSER_KEYS = ("viewport_css", "device_scale_factor")
_APPLIED_ENV_KEYS = ("kind", "start_url", "task", "seed", "episode_seconds", "browser")


class ReplaySetup(BaseModel):
    """What a replay takes from a run directory's ``meta.json``, validated.

    Attributes:
        task: the task text the recorded agent was given.
        kind: ``"browser"`` (a web page) or ``"miniwob"`` (a MiniWoB++ task on loopback).
        start_url: the first page of a ``browser`` run (at most 2,048 characters).
        miniwob_task, seed, episode_seconds: the MiniWoB++ task, its seed, its episode length (s).
        viewport_css: (width, height) in CSS px; ``device_scale_factor``: device px per CSS px.
        loop: the recorded loop settings.
        not_applied: ``"key=value"`` of everything recorded that the replay does not apply.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field("", max_length=100_000)
    kind: Literal["browser", "miniwob"] = "browser"
    start_url: str | None = Field(None, max_length=2048)
    miniwob_task: str | None = Field(None, pattern=_TASK_NAME)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    episode_seconds: float = Field(600.0, gt=0, le=86_400, allow_inf_nan=False)
    viewport_css: tuple[int, int] = (1280, 800)
    device_scale_factor: float = Field(1.0, gt=0, le=8, allow_inf_nan=False)
    loop: AgentConfig = Field(default_factory=AgentConfig)
    not_applied: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> ReplaySetup:
        if self.kind == "browser" and not self.start_url:
            raise ValueError("a browser run needs its start_url")
        if self.kind == "miniwob" and not self.miniwob_task:
            raise ValueError("a miniwob run needs its task name")
        width, height = self.viewport_css
        if min(width, height) < 16 or width * height * self.device_scale_factor ** 2 > MAX_REPLAY_PIXELS:
            raise ValueError(f"viewport {width}x{height} CSS px at scale {self.device_scale_factor} is outside "
                             f"16 px a side and {MAX_REPLAY_PIXELS} device pixels")
        return self


def _leaves(value: Any, prefix: str) -> list[str]:
    """``"a.b=value"`` for every leaf of a recorded dict (values shortened to 80 characters)."""
    if isinstance(value, dict):
        return [leaf for key, sub in value.items() for leaf in _leaves(sub, f"{prefix}.{key}" if prefix else str(key))]
    text = repr(value)
    return [f"{prefix}={text if len(text) <= 80 else text[:77] + '...'}"]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _not_applied(config: dict[str, Any]) -> tuple[str, ...]:
    """Everything in ``meta.config`` that a replay does not take."""
    env, browser = _mapping(config.get("env")), _mapping(_mapping(config.get("env")).get("browser"))
    skipped = {k: v for k, v in config.items() if k not in ("env", "loop")}
    skipped["env"] = {k: v for k, v in env.items() if k not in _APPLIED_ENV_KEYS}
    skipped["env"]["browser"] = {k: v for k, v in browser.items() if k not in _APPLIED_BROWSER_KEYS}
    return tuple(_leaves(skipped, ""))


def replay_setup(meta: RunMeta) -> ReplaySetup:
    """What a replay of the run described by ``meta`` takes from it (see the module doc).

    Raises:
        TrajectoryError: the recorded values a replay needs are missing or invalid (the message
            names the field).
    """
    config = _mapping(meta.config)
    env, browser = _mapping(config.get("env")), _mapping(_mapping(config.get("env")).get("browser"))
    fields: dict[str, Any] = {"task": meta.task, "kind": env.get("kind", "browser"),
                              "start_url": env.get("start_url", meta.start_url),
                              **{k: browser[k] for k in _APPLIED_BROWSER_KEYS if k in browser},
                              "not_applied": _not_applied(config)}
    if fields["kind"] == "miniwob":
        fields.update(miniwob_task=env.get("task"), seed=env.get("seed", 0),
                      episode_seconds=env.get("episode_seconds", 600.0), start_url=None)
    if "loop" in config:
        fields["loop"] = config["loop"]
    try:
        return ReplaySetup.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "meta.json"
        raise TrajectoryError(f"this run cannot be replayed: {where}: {first['msg']}",
                              hint="the run directory's meta.json is damaged or was not written by "
                                   "`giraffe run`; replay only needs its task, start page, viewport and loop "
                                   "settings") from exc


def replay_environment(setup: ReplaySetup, *, browser: BrowserConfig | None = None,
                       safety: SafetyPolicy | None = None, server: Any = None) -> BrowserEnv:
    """The environment a replay runs in: the replaying user's browser and safety, the recording's
    page, viewport and scale.

    Args:
        setup: from :func:`replay_setup`.
        browser: the replaying user's launch settings (binary, flags, timeouts); default
            :class:`BrowserConfig`'s. Only ``viewport_css`` and ``device_scale_factor`` are replaced.
        safety: the replaying user's policy (default: :class:`SafetyPolicy`'s, which allows only
            the start URL's host).
        server: a :class:`~giraffe_agent.envs.miniwob.MiniWoBServer` for ``miniwob`` runs.

    Raises:
        SafetyError: a ``file://`` start URL while ``safety`` does not allow file URLs, or a start
            URL that is not ``http``, ``https`` or ``file``.
        InputError: an unknown MiniWoB++ task.
    """
    from giraffe_agent.safety import SafetyError

    base = (browser or BrowserConfig()).model_dump()
    config = BrowserConfig(**{**base, "viewport_css": setup.viewport_css,
                              "device_scale_factor": setup.device_scale_factor})
    safety = safety or SafetyPolicy()
    if setup.kind == "miniwob":
        from giraffe_agent.envs.miniwob import MiniWoBEnv

        if server is None:
            raise InputError("a MiniWoB++ replay needs a server for its task page",
                             hint="pass server=MiniWoBServer()")
        return MiniWoBEnv(setup.miniwob_task or "", setup.seed, server, config=config, safety=safety,
                          episode_seconds=setup.episode_seconds)
    url = str(setup.start_url)
    scheme = url.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url) else ""
    if scheme not in ("http", "https", "file") or (scheme == "file" and not safety.allow_file_urls):
        raise SafetyError(f"the recorded start URL {url[:200]!r} is refused: a replay opens http(s) pages "
                          "(file pages only when the replaying policy allows file URLs)",
                          hint="replay with SafetyPolicy(allow_file_urls=True) only for a run you trust")
    return BrowserEnv(url, config, safety)
