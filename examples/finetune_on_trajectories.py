"""Fine-tune the tiny model on agent runs it can learn from (python examples/finetune_on_trajectories.py).

1. Records a few MiniWoB++ episodes with the scripted demonstrators (headless Chromium, the real
   agent loop: memory, parser, coordinates, run directories) into ``runs/demos/``.
2. Fine-tunes the tiny preset on them with ``training/configs/tiny_cpu.yaml`` (LoRA, packed rows,
   progressive 4K -> 8K stages with M-RoPE++): every model call becomes one sample whose prompt
   is exactly the context the agent sent.
3. Prints the mixing report, the loss curve's ends, and the trained model's reply to a recorded
   context next to the demonstrator's.

Runs on a CPU in about a minute; needs the agent and train extras and a Chromium
(``pip install -e ".[agent,train,miniwob]"``, ``apt-get install chromium``).
"""

import logging
import shutil
from importlib import resources
from pathlib import Path

from giraffe_agent import Agent, AgentConfig, BrowserConfig, MiniWoBEnv, MiniWoBServer, ScriptedBackend
from giraffe_agent.demonstrators import miniwob_demonstrator
from giraffe_agent.trajectory import context_messages, read_run
from training import Trainer, load_config

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
RUNS = Path("runs/demos")
#: a short system prompt keeps the tiny model's contexts small (the built-in one is ~2,000 tiny-model tokens)
PROMPT = ('You operate a web browser. Write one line "Thought: ..." and then one action as JSON, e.g. '
          '{"action": "click", "x": 500, "y": 300} with x and y from 0 to 1000, or {"action": "type", "text": "hi"}.')
TASKS = [("click-button", 0), ("click-button", 1), ("focus-text", 0), ("enter-text", 0), ("login-user", 0)]

OUT = Path("runs/tiny-cpu")
for folder in (RUNS, OUT):  # a fresh start every time (training refuses an output_dir holding checkpoints)
    shutil.rmtree(folder, ignore_errors=True)
with MiniWoBServer() as server:
    for task, seed in TASKS:
        env = MiniWoBEnv(task, seed, server, config=BrowserConfig(viewport_css=(160, 210), capture_elements=True))
        backend = ScriptedBackend(miniwob_demonstrator(task), name=f"demo:{task}")
        agent = Agent("Solve the task shown at the top of the screen.", env, backend, out_dir=RUNS / f"{task}-{seed}",
                      config=AgentConfig(system_prompt=PROMPT, write_report=False))
        result = agent.run()
        print(f"recorded {task} seed {seed}: {result.status}, reward {result.info.get('reward')}, {result.steps} steps")

config = load_config(Path(str(resources.files("training") / "configs" / "tiny_cpu.yaml")),
                     {"output_dir": str(OUT)})
trainer = Trainer(config)
result = trainer.fit()
print(trainer.report.to_text())
print(f"{result.steps} steps: loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; model in {result.model_dir}")

run = read_run(RUNS / "login-user-0")
step = run.steps[-1]
reply = trainer.engine().generate(context_messages(step, run.directory), max_new_tokens=48).text
print(f"demonstrator: {step.raw_output!r}\ntrained:      {reply!r}")
