"""Benchmark: where one agent step's time goes, on the local backend with the demo model.

Episodes of the shipped demo model (``demo/model``, the tiny preset trained on MiniWoB++) through
the full agent loop (``LocalBackend`` with its KV-cache session, headless Chromium, trajectory on
disk, no report), with each step's time split into:

* **capture**: the environment's ``start`` / ``observe`` (screenshot, page state), timed by a
  subclass of ``MiniWoBEnv``;
* **vision**: the vision tower's forward (a forward hook on ``model.visual``);
* **prefill** / **decode**: the language model's forwards on more than one token / on one token
  (forward hooks on the model);
* **preprocessing**: the rest of the backend call (``model_s`` of the trajectory minus the three
  above): chat layout, tokenization, image resizing and patching, sampling;
* **action**: the trajectory's ``act_s`` (Playwright input and the settle wait);
* **loop**: the rest of the episode (memory, context rendering, trajectory writes).

    python benchmarks/agent_step.py                      # 3 tasks x 3 seeds
    python benchmarks/agent_step.py --seeds 1 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

TASKS = ("login-user", "enter-text", "focus-text")
PARTS = ("capture", "preprocessing", "vision", "prefill", "decode", "action", "loop")
"""The parts of a step; ``launch`` (the episode's ``env.start``: browser, page, first capture) is
reported per episode."""


class _Clock:
    """Seconds spent in hooked modules, by name."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys((*PARTS, "launch", "action_env"), 0.0)
        self._began: dict[int, float] = {}

    def hook(self, module: torch.nn.Module, classify) -> None:
        def before(mod, args, kwargs):
            self._began[id(mod)] = time.perf_counter()

        def after(mod, args, kwargs, output):
            self.seconds[classify(args, kwargs)] += time.perf_counter() - self._began.pop(id(mod))

        module.register_forward_pre_hook(before, with_kwargs=True)
        module.register_forward_hook(after, with_kwargs=True)


def _timed_env(clock: _Clock):
    """``MiniWoBEnv`` timing its ``start`` (launch) and ``observe`` (capture); an observation taken
    inside ``start`` or ``act`` counts there, not twice."""
    from giraffe_agent.envs import MiniWoBEnv

    class TimedEnv(MiniWoBEnv):
        _inside = False

        async def _timed(self, part: str, call):
            if self._inside:
                return await call()
            self._inside, began = True, time.perf_counter()
            try:
                return await call()
            finally:
                self._inside = False
                clock.seconds[part] += time.perf_counter() - began

        async def start(self):
            return await self._timed("launch", super().start)

        async def observe(self):
            return await self._timed("capture", super().observe)

        async def act(self, action, transform):
            return await self._timed("action_env", lambda: super(TimedEnv, self).act(action, transform))

    return TimedEnv


def _tokens(args: tuple, kwargs: dict) -> int:
    ids = kwargs.get("input_ids", args[0] if args else None)
    return 0 if ids is None else int(ids.shape[-1])


async def _episodes(seeds: int, out: Path) -> dict:
    from demo.build import MODEL_DIR
    from giraffe_agent.backends import LocalBackend
    from giraffe_agent.envs import MINIWOB_VIEWPORT, BrowserConfig, MiniWoBServer
    from giraffe_agent.loop import Agent, load_agent_config
    from giraffe_core import load

    engine = load(MODEL_DIR)
    clock = _Clock()
    clock.hook(engine.model.model.visual, lambda a, k: "vision")
    clock.hook(engine.model, lambda a, k: "prefill" if _tokens(a, k) > 1 else "decode")
    config = load_agent_config(MODEL_DIR).model_copy(update={"write_report": False})
    env_class = _timed_env(clock)
    model_s = act_s = wall = 0.0
    calls = episodes = solved = 0
    with MiniWoBServer() as server:
        for task in TASKS:
            for seed in range(seeds):
                env = env_class(task, seed, server, config=BrowserConfig(viewport_css=MINIWOB_VIEWPORT))
                began = time.perf_counter()
                result = await Agent(None, env, LocalBackend(engine), out_dir=out / task / str(seed),
                                     config=config).run_async()
                wall += time.perf_counter() - began
                episodes += 1
                solved += (result.info.get("reward") or 0) > 0
                for line in result.trajectory.read_text().splitlines():
                    timings = json.loads(line).get("timings") or {}
                    calls += 1
                    model_s += timings.get("model_s") or 0.0
                    act_s += timings.get("act_s") or 0.0
    s = clock.seconds
    s["preprocessing"] = model_s - s["vision"] - s["prefill"] - s["decode"]
    s["action"] = act_s
    s["loop"] = wall - s["launch"] - s["capture"] - model_s - act_s
    steps = wall - s["launch"]
    return {"episodes": episodes, "solved": solved, "model_calls": calls, "episode_s": round(wall, 3),
            "launch_s_per_episode": round(s["launch"] / max(1, episodes), 3),
            "env_act_ms_per_call": round(1000 * s["action_env"] / max(1, calls), 1),
            "per_step_ms": {k: round(1000 * s[k] / max(1, calls), 1) for k in PARTS},
            "share_of_steps": {k: round(s[k] / steps, 3) for k in PARTS}}


def main() -> None:
    """Run the episodes and print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="episodes per task")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_episodes(args.seeds, Path(tmp)))
    print("| part | ms per model call | share of step time (launch excluded) |")
    print("|---|---|---|")
    for part in PARTS:
        print(f"| {part} | {result['per_step_ms'][part]:.1f} | {100 * result['share_of_steps'][part]:.1f}% |")
    print(f"{result['episodes']} episodes ({result['solved']} solved), {result['model_calls']} model calls, "
          f"{result['episode_s']:.1f} s; launch {result['launch_s_per_episode']:.2f} s per episode")
    print(json.dumps({"benchmark": "agent_step", "torch": torch.__version__, "python": platform.python_version(),
                      "threads": args.threads or torch.get_num_threads(), "tasks": TASKS, **result}))


if __name__ == "__main__":
    main()
