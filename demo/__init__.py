"""The demo: a tiny Giraffe trained on CPU from the SDK's own MiniWoB++ recordings.

``giraffe demo`` runs the shipped model (:func:`run_demo`); ``giraffe build-demo`` records,
trains, evaluates and writes its model card (:func:`build_demo`). See ``demo/model/README.md``.
"""

from demo.build import (
    AGENT_CONFIG_PATH,
    DEMO_TASKS,
    MODEL_DIR,
    TRAIN_CONFIG_PATH,
    TRAIN_SEED_BASE,
    BuildResult,
    DemoConfig,
    build_demo,
    write_copy_exercises,
)
from demo.card import CARD_FILE, pointed_at, write_model_card
from demo.run import DEFAULT_TASK, run_demo

__all__ = [
    "AGENT_CONFIG_PATH",
    "BuildResult",
    "CARD_FILE",
    "DEFAULT_TASK",
    "DEMO_TASKS",
    "DemoConfig",
    "MODEL_DIR",
    "TRAIN_CONFIG_PATH",
    "TRAIN_SEED_BASE",
    "build_demo",
    "pointed_at",
    "run_demo",
    "write_copy_exercises",
    "write_model_card",
]
