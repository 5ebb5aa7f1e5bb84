"""giraffe_agent: agents on top of giraffe_core (browser and desktop environments, the agent loop,
trajectories, screen-recording QA). It imports giraffe_core, never the other way round."""

from giraffe_agent.envs.chromium import ChromiumInfo, find_chromium

__all__ = ["ChromiumInfo", "find_chromium"]
