"""Benchmark: MiniWoB++ episodes per second with one shared Chromium against one per episode.

Recording demonstrations and evaluating agents run hundreds of short episodes. Each runs the
scripted demonstrator through the full agent loop (screenshots, memory, trajectory on disk) on
headless Chromium, two ways, in the same process and the same order of tasks and seeds:

  (a) fresh  - every episode launches Playwright's driver and Chromium and closes them (what
               ``Agent(...).run()`` with a plain ``MiniWoBEnv`` does)
  (b) shared - one :class:`giraffe_agent.SharedBrowser`; every episode gets a new browser context
               (own cookies, storage and allowlist proxy) in it

    python benchmarks/episodes.py                   # 3 tasks x 10 seeds each way
    python benchmarks/episodes.py --seeds 4         # quick look

Prints a table and one JSON line; results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from giraffe_agent import Agent, AgentConfig, BrowserConfig, MiniWoBEnv, MiniWoBServer, ScriptedBackend, SharedBrowser
from giraffe_agent.demonstrators import miniwob_demonstrator
from giraffe_agent.envs import MINIWOB_VIEWPORT

TASKS = ("login-user", "enter-text", "focus-text-2")


async def run(mode: str, seeds: int, server: MiniWoBServer, out: Path) -> dict:
    config = AgentConfig(write_report=False)
    browser = BrowserConfig(viewport_css=MINIWOB_VIEWPORT, capture_elements=True)
    solved = steps = 0
    began = time.perf_counter()
    async with SharedBrowser() as shared:
        for task in TASKS:
            for seed in range(seeds):
                env = MiniWoBEnv(task, seed, server, config=browser, shared=shared if mode == "shared" else None)
                backend = ScriptedBackend(miniwob_demonstrator(task, thoughts=False))
                result = await Agent(None, env, backend, out_dir=out / mode / task / str(seed),
                                     config=config).run_async()
                solved += (result.info.get("reward") or 0) > 0
                steps += result.steps
    seconds = time.perf_counter() - began
    episodes = len(TASKS) * seeds
    return {"mode": mode, "episodes": episodes, "solved": solved, "steps": steps, "seconds": round(seconds, 2),
            "episodes_per_s": round(episodes / seconds, 3), "s_per_episode": round(seconds / episodes, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per task")
    args = parser.parse_args()
    rows = []
    with MiniWoBServer() as server, tempfile.TemporaryDirectory() as tmp:
        for mode in ("fresh", "shared"):
            rows.append(asyncio.run(run(mode, args.seeds, server, Path(tmp))))
    ratio = rows[1]["episodes_per_s"] / rows[0]["episodes_per_s"]
    table = Table(title=f"MiniWoB++ episodes ({', '.join(TASKS)}; {args.seeds} seeds each)")
    for col in ("mode", "episodes", "solved", "steps", "seconds", "episodes/s", "s/episode"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["mode"], str(r["episodes"]), str(r["solved"]), str(r["steps"]), f"{r['seconds']:.1f}",
                      f"{r['episodes_per_s']:.2f}", f"{r['s_per_episode']:.2f}")
    Console().print(table)
    Console().print(f"shared / fresh throughput: {ratio:.2f}x")
    print(json.dumps({"benchmark": "episodes", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ratio": round(ratio, 2),
                      "results": rows}))


if __name__ == "__main__":
    main()
