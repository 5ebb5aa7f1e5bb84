"""Environments the agent sees and acts in."""

from giraffe_agent.envs.chromium import SYSTEM_NAMES, ChromiumInfo, find_chromium

__all__ = ["ChromiumInfo", "SYSTEM_NAMES", "find_chromium"]
