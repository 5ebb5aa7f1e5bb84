"""The timeline memory: frames and text turns inside a token budget, in resolution tiers that
change in cache-aligned blocks (see :mod:`giraffe_core.memory.timeline`)."""

from giraffe_core.memory.items import TIER_ORDER, FrameItem, FrameStore, Role, TextItem, Tier, pixel_digest
from giraffe_core.memory.policy import MemoryConfig, policy_tiers
from giraffe_core.memory.timeline import MemoryRecord, RenderedContext, TimelineMemory

__all__ = [
    "FrameItem",
    "FrameStore",
    "MemoryConfig",
    "MemoryRecord",
    "RenderedContext",
    "Role",
    "TIER_ORDER",
    "TextItem",
    "Tier",
    "TimelineMemory",
    "pixel_digest",
    "policy_tiers",
]
