"""Backends: what turns a step's rendered context into the model's raw text.

* :class:`LocalBackend`: a local engine, with a KV-cache session across steps;
* :class:`OpenAIBackend`: any OpenAI-compatible endpoint (vLLM, sglang, ``giraffe serve``);
* :class:`ScriptedBackend` and :class:`ReplayBackend`: outputs from a script or a recorded run.
"""

from giraffe_agent.backends.base import Backend, BackendRequest, Completion
from giraffe_agent.backends.local import LocalBackend
from giraffe_agent.backends.openai import BackendError, OpenAIBackend, to_openai_messages
from giraffe_agent.backends.scripted import ReplayBackend, ScriptedBackend

__all__ = [
    "Backend",
    "BackendError",
    "BackendRequest",
    "Completion",
    "LocalBackend",
    "OpenAIBackend",
    "ReplayBackend",
    "ScriptedBackend",
    "to_openai_messages",
]
