"""Environments the agent sees and acts in."""

from giraffe_agent.envs.chromium import ChromiumInfo, find_chromium

__all__ = ["ChromiumInfo", "find_chromium"]
