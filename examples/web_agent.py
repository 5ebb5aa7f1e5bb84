"""Hello world: a web agent on a MiniWoB++ task, with the tiny model (python examples/web_agent.py)."""
import time

from giraffe_agent import Agent, LocalBackend, MiniWoBEnv, MiniWoBServer
from giraffe_core import load

with MiniWoBServer() as server:                      # MiniWoB++ pages on 127.0.0.1
    env = MiniWoBEnv("click-button", seed=0, server=server)
    backend = LocalBackend(load("tiny", context_length=32768))   # or OpenAIBackend(url, model)
    agent = Agent("Solve the task at the top of the screen.", env, backend, out_dir=f"runs/hello-{time.time():.0f}")
    result = agent.run()
print(result.status, result.info.get("reward"), result.report)
