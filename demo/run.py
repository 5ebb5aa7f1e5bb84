"""``giraffe demo``: the trained tiny agent solves a MiniWoB++ task in headless Chromium."""

from __future__ import annotations

from pathlib import Path

from giraffe_agent.loop import AgentResult
from giraffe_core.errors import ConfigError

__all__ = ["DEFAULT_TASK", "run_demo"]

#: the task ``giraffe demo`` runs unless told otherwise (the one the shipped model solves best)
DEFAULT_TASK = "enter-password"


def run_demo(task: str = DEFAULT_TASK, seed: int = 0, *, out_dir: str | Path = "runs/demo",
             model: str | Path | None = None, max_steps: int = 8) -> AgentResult:
    """Run the demo model (default: the shipped ``demo/model``) on one MiniWoB++ episode.

    The model sees the screenshots and the page's instruction only (no DOM); the run directory
    ``out_dir`` gets the trajectory, the frames and ``report.html``.

    Args:
        task: a MiniWoB++ task name (the model was trained on :data:`demo.build.DEMO_TASKS`).
        seed: the episode seed (0-49 are the evaluation seeds, never seen in training).
        out_dir: the run directory to create.
        model: a model directory written by ``giraffe build-demo`` (default: the shipped one).
        max_steps: most actions.

    Raises:
        ConfigError: no demo model at ``model`` (build one with ``giraffe build-demo --ship``).
        BrowserNotFoundError: no Chromium (install Debian's ``chromium``).
        TrajectoryError: ``out_dir`` already holds a run.
    """
    from demo.build import MODEL_DIR
    from giraffe_agent.backends import LocalBackend
    from giraffe_agent.envs import MINIWOB_VIEWPORT, BrowserConfig, MiniWoBEnv, MiniWoBServer
    from giraffe_agent.loop import Agent, load_agent_config
    from giraffe_agent.safety import SafetyPolicy
    from giraffe_core import load

    model_dir = Path(model) if model is not None else MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"no demo model in {model_dir}",
                          hint="build it with `giraffe build-demo --ship` (about an hour on 2 CPU cores)")
    engine = load(model_dir)
    safety = SafetyPolicy(max_steps=max_steps, max_seconds=120.0)
    with MiniWoBServer() as server:
        env = MiniWoBEnv(task, seed, server, config=BrowserConfig(viewport_css=MINIWOB_VIEWPORT), safety=safety)
        agent = Agent(None, env, LocalBackend(engine), out_dir=out_dir, config=load_agent_config(model_dir),
                      safety=safety)
        return agent.run()
