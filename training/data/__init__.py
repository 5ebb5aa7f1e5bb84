"""Training data: readers (LLaVA / ShareGPT JSON, Hugging Face datasets, video QA, long text, agent
trajectories), samples and their labels, and the ETVLM mixture with its report."""

from training.data.augment import copied_values, copy_drills, copy_variants, text_only
from training.data.examples import IGNORE_INDEX, DataLog, EncodedSample, Encoder, Example, Problem, check_image
from training.data.mixture import (
    HISTOGRAM_EDGES,
    MixReport,
    StagePlan,
    StageReport,
    concatenate,
    plan_stage,
    read_sources,
)
from training.data.readers import (
    BadRecord,
    chat_from_record,
    json_records,
    read_hf,
    read_llava,
    read_long_text,
    source_records,
)
from training.data.trajectories import read_trajectories, run_directories, run_succeeded
from training.data.video import read_video_qa, video_frames

__all__ = [
    "BadRecord",
    "DataLog",
    "EncodedSample",
    "Encoder",
    "Example",
    "HISTOGRAM_EDGES",
    "IGNORE_INDEX",
    "MixReport",
    "Problem",
    "StagePlan",
    "StageReport",
    "chat_from_record",
    "check_image",
    "concatenate",
    "copied_values",
    "copy_drills",
    "copy_variants",
    "json_records",
    "plan_stage",
    "read_hf",
    "read_llava",
    "read_long_text",
    "read_sources",
    "read_trajectories",
    "read_video_qa",
    "run_directories",
    "run_succeeded",
    "source_records",
    "text_only",
    "video_frames",
]
