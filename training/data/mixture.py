"""The ETVLM mixture: read every source, concatenate short samples, draw each stage's samples by
category ratio and long share, and report what came out.

Per stage of ``L`` tokens (:func:`plan_stage`):

1. **Fit.** Samples longer than ``L`` are held back from this stage (a later, longer stage can
   use them; a sample longer than the LAST stage is bad data and was reported when read).
2. **Concatenate** (categories in ``concatenate``, default short visual): the samples, in a
   seeded random order, are joined greedily into multi-turn dialogues of at most ``L`` tokens.
   A sample is never cut: it joins the current dialogue only if all of it fits, and the joined
   chat is exactly the samples' turns in order (the first one's system turn kept, the others'
   dropped; only samples with the same system prompt are joined). Lengths stay exact: ChatML
   turns are separated by special tokens, so a joined dialogue has the sum of its samples'
   tokens minus the dropped system turns.
3. **Quotas.** ``N`` samples (``samples_per_stage``, or by default the most that uses no sample
   twice: ``min over categories of available / ratio``) are split by ``ratios`` with largest-
   remainder rounding (a stage's own ``ratios``, when it has them, replace the mixture's: a
   curriculum). When a quota exceeds what a category has, samples are reused (counted).
4. **Long share.** Of the ``N`` samples, ``round(long_share * N)`` should be longer than
   ``long_threshold_tokens``. Each category can give between ``max(0, n_c - short_c)`` and
   ``min(n_c, long_c)`` long samples; the categories start at their minimum and the rest is spread
   over their room in proportion to it. When the target cannot be met, the report shows the share
   reached and a warning is logged.
5. The stage's samples are shuffled (seeded by ``seed`` and the stage index).

:class:`MixReport` gives, per stage, the actual category shares, the long share, a token-length
histogram, how many samples were held back, joined and reused, and the data log's counts.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from giraffe_core.errors import ConfigError, GiraffeError
from giraffe_core.resolution import VisionGeometry
from training.config import MixtureConfig, Source, SwiftSource
from training.data.augment import copy_drills, copy_variants
from training.data.examples import DataLog, Encoder, Example
from training.data.formats import read_llamafactory, read_swift
from training.data.grounding import BoxConvention
from training.data.readers import read_hf, read_llava, read_long_text
from training.data.trajectories import read_trajectories
from training.data.video import VideoSettings, read_video_qa

__all__ = ["HISTOGRAM_EDGES", "MixReport", "StagePlan", "StageReport", "concatenate", "plan_stage", "read_sources",
           "suggest_ratios"]

logger = logging.getLogger(__name__)

#: token-length histogram bucket edges (a bucket is [edge, next edge))
HISTOGRAM_EDGES: tuple[int, ...] = (0, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


def _boxes(source: SwiftSource, encoder: Encoder, geometry: VisionGeometry) -> BoxConvention:
    """The box convention of ``source`` for the encoder's model (auto: Qwen2.5-VL's pixels when the
    model's vision config has ``tokens_per_second``, which only Qwen2.5-VL's has; else 0..1000)."""
    box_format = source.box_format
    if box_format == "auto":
        box_format = "qwen2_5_vl" if encoder.tokens.tokens_per_second is not None else "qwen2_vl"
    return BoxConvention(box_format, geometry, encoder.default_max_tokens)


def _read_one(source: Source, log: DataLog, frames_dir: Path, encoder: Encoder,
              geometry: VisionGeometry) -> list[Example]:
    common: dict[str, Any] = {"label": source.label, "category": source.category, "max_samples": source.max_samples}
    if source.kind == "llava":
        return read_llava(source.path, log, image_root=source.image_root, **common)
    if source.kind == "hf":
        return read_hf(source.path, log, split=source.split, image_root=source.image_root, **common)
    if source.kind == "long_text":
        return read_long_text(source.path, log, **common)
    if source.kind in ("video_qa", "llamafactory", "swift"):
        video = VideoSettings(Path(source.frames_dir) if source.frames_dir else frames_dir, geometry, source.fps,
                              source.max_frames, source.scheme)
        if source.kind == "video_qa":
            return read_video_qa(source.path, log, frames_dir=video.frames_dir, geometry=geometry,
                                 video_root=source.video_root, fps=source.fps, max_frames=source.max_frames,
                                 scheme=source.scheme, **common)
        options = {"media_root": source.media_root, "video": video, "ignore_fields": source.ignore_fields, **common}
        if source.kind == "swift":
            return read_swift(source.path, log, boxes=_boxes(source, encoder, geometry), **options)
        return read_llamafactory(source.path, log, **options)
    examples = read_trajectories(source.path, log, successful_only=source.successful_only,
                                 first_step=source.first_step, last_step=source.last_step,
                                 include_parse_errors=source.include_parse_errors, **common)
    variants = [v for example in examples for v in copy_variants(example, source.copy_augment)]
    variants += [v for example in examples for v in copy_drills(example, source.copy_drills)]
    log.augmented[source.label] += len(variants)
    return examples + variants


def suggest_ratios(counts: Counter) -> dict[str, float]:
    """Ratios in proportion to ``counts`` (samples per category), in hundredths that sum to 1."""
    total = sum(counts.values())
    hundredths = _largest_remainder({c: n / total for c, n in counts.items()}, 100)
    return {c: h / 100 for c, h in sorted(hundredths.items(), key=lambda item: -item[1]) if h}


def _empty_categories_error(empty: list[str], unrated: Counter, silent: list[str], log: DataLog) -> ConfigError:
    """What to change when categories with a positive ratio got no sample: the sources that gave
    none and why, and ratios that would train on what was read."""
    lines = [f"categories {empty} have a positive ratio but no usable samples"]
    lines += [log.why_empty(label) for label in silent]
    hint = "add sources for them, or set their ratios to 0 (ratios must still sum to 1)"
    if unrated:
        found = ", ".join(f"{c} ({n})" for c, n in unrated.most_common())
        lines.append(f"samples were read in categories without a ratio: {found}")
        ratios = ", ".join(f"{c}: {r}" for c, r in suggest_ratios(unrated).items())
        hint = f"to train on the samples read, set data.ratios: {{{ratios}}}"
    return ConfigError("\n".join(lines), hint=hint)


def read_sources(config: MixtureConfig, encoder: Encoder, *, max_length_tokens: int, frames_dir: Path,
                 log: DataLog) -> list[Example]:
    """Read and measure every source's samples.

    Samples that cannot be laid out (e.g. a chat the processor refuses) or that are longer than
    ``max_length_tokens`` (the last stage) are bad data, reported through ``log``. A source that
    gives no sample at all is logged (a warning saying how many records were skipped and the most
    common reason).

    Raises:
        DataError: a bad sample under ``on_bad_sample: fail``.
        ConfigError: a category with a positive ratio has no samples at all (the message names the
            sources that gave none and why, and suggests ratios for the categories that were read).
    """
    geometry = VisionGeometry.from_processor(encoder.processor)
    out: list[Example] = []
    unrated: Counter = Counter()
    silent: list[str] = []
    for source in config.sources:
        kept = _measure(_read_one(source, log, frames_dir, encoder, geometry), source.label, config, encoder,
                        max_length_tokens, log, unrated)
        if not kept:
            silent.append(source.label)
            logger.warning("%s", log.why_empty(source.label))
        out += kept
    present = {e.category for e in out}
    empty = [c for c, r in config.ratios.items() if r > 0 and c not in present]
    if empty:
        raise _empty_categories_error(empty, unrated, silent, log)
    return out


def _measure(examples: list[Example], label: str, config: MixtureConfig, encoder: Encoder, max_length_tokens: int,
             log: DataLog, unrated: Counter) -> list[Example]:
    """The examples that can be laid out, fit the last stage and have a ratio (the rest counted)."""
    kept = []
    for example in examples:
        file, _, line = example.source.rpartition(":")
        try:
            encoder.measure(example)
        except GiraffeError as exc:
            log.bad(label, file, int(line) if line.isdigit() else None, exc.message)
            continue
        if example.num_tokens > max_length_tokens:
            log.bad(label, file, int(line) if line.isdigit() else None,
                    f"too long: {example.num_tokens} tokens, longer than the last stage ({max_length_tokens})")
            continue
        if config.ratios.get(example.category, 0.0) <= 0:
            log.filter(label, f"category {example.category} has no ratio")
            unrated[example.category] += 1
            continue
        log.kept[label] += 1
        kept.append(example)
    return kept


def _system(example: Example) -> str | None:
    first = example.messages[0] if example.messages else None
    return first["content"] if first is not None and first["role"] == "system" else None


def _join(group: list[Example]) -> Example:
    if len(group) == 1:
        return group[0]
    messages = list(group[0].messages)
    for example in group[1:]:
        messages += [m for m in example.messages if m["role"] != "system"]
    total = group[0].num_tokens + sum(e.num_tokens - e.prefix_tokens for e in group[1:])
    return Example(messages, f"{group[0].source}+{len(group) - 1} more", group[0].category, num_tokens=total,
                   prefix_tokens=group[0].prefix_tokens, tools=group[0].tools)


def concatenate(examples: list[Example], length_tokens: int) -> list[Example]:
    """Join measured samples, in order, into dialogues of at most ``length_tokens`` (none is cut).

    Samples with a ``completion`` (agent steps) are never joined: their target is one reply; only
    samples with the same system turn and the same tool definitions are joined.
    """
    out: list[Example] = []
    group: list[Example] = []
    total = 0
    for example in examples:
        extra = example.num_tokens - example.prefix_tokens
        if group and (total + extra > length_tokens or _system(example) != _system(group[0])
                      or example.tools != group[0].tools
                      or example.completion is not None or group[0].completion is not None):
            out.append(_join(group))
            group, total = [], 0
        if not group:
            group, total = [example], example.num_tokens
        else:
            group.append(example)
            total += extra
    if group:
        out.append(_join(group))
    return out


def _largest_remainder(weights: dict[str, float], total: int) -> dict[str, int]:
    raw = {k: w * total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[:total - sum(counts.values())]:
        counts[k] += 1
    return counts


def _take(units: list[Example], count: int, rng: random.Random) -> tuple[list[Example], int]:
    """``count`` units drawn without replacement while they last, then reused; (units, reused)."""
    out: list[Example] = []
    while len(out) < count and units:
        batch = list(units)
        rng.shuffle(batch)
        out += batch[:count - len(out)]
    return out, max(0, count - len(units))


@dataclass
class StagePlan:
    """The samples of one stage, in training order, and how they were drawn."""

    index: int
    length_tokens: int
    examples: list[Example]
    held_back: int = 0
    joined: dict[str, tuple[int, int]] = field(default_factory=dict)  # category -> (samples in, dialogues out)
    reused: int = 0
    long_target: int | None = None


def plan_stage(examples: list[Example], config: MixtureConfig, length_tokens: int, index: int = 0,
               ratios: dict[str, float] | None = None) -> StagePlan:
    """Draw one stage's samples (see the module docstring for the five steps).

    ``ratios`` (a stage's own, for a curriculum) replaces ``config.ratios`` for this stage.
    """
    rng = random.Random(f"{config.seed}:{index}")
    fits = [e for e in examples if e.num_tokens <= length_tokens]
    plan = StagePlan(index, length_tokens, [], held_back=len(examples) - len(fits))
    pools: dict[str, list[Example]] = {}
    for example in fits:
        pools.setdefault(example.category, []).append(example)
    for category in config.concatenate:
        if category in pools:
            units = list(pools[category])
            rng.shuffle(units)
            pools[category] = concatenate(units, length_tokens)
            plan.joined[category] = (len(units), len(pools[category]))
    wanted = config.ratios if ratios is None else ratios
    ratios = {c: r for c, r in wanted.items() if r > 0 and pools.get(c)}
    missing = [c for c, r in wanted.items() if r > 0 and not pools.get(c)]
    if missing:
        logger.warning("stage %d (%d tokens): no sample of %s fits; their share goes to the other categories",
                       index, length_tokens, missing)
    if not ratios:
        raise ConfigError(f"no sample fits stage {index} of {length_tokens} tokens",
                          hint="raise the stage's length_tokens or add shorter samples")
    scale = sum(ratios.values())
    ratios = {c: r / scale for c, r in ratios.items()}
    total = config.samples_per_stage or max(1, min(int(len(pools[c]) / r + 1e-9) for c, r in ratios.items()))
    quotas = _largest_remainder(ratios, total)
    threshold = config.long_threshold_tokens
    longs = {c: [u for u in pools[c] if u.num_tokens > threshold] for c in ratios}
    shorts = {c: [u for u in pools[c] if u.num_tokens <= threshold] for c in ratios}
    if config.long_share is None:
        chosen_long = None
    else:
        plan.long_target = round(config.long_share * total)
        low = {c: quotas[c] if not shorts[c] else max(0, quotas[c] - len(shorts[c])) for c in ratios}
        high = {c: 0 if not longs[c] else quotas[c] if not shorts[c] else min(quotas[c], len(longs[c]))
                for c in ratios}
        high = {c: max(high[c], low[c]) for c in ratios}
        chosen_long = dict(low)
        need = plan.long_target - sum(low.values())
        room = {c: high[c] - low[c] for c in ratios}
        if need > 0 and sum(room.values()) > 0:
            give = _largest_remainder({c: room[c] / sum(room.values()) for c in ratios}, min(need, sum(room.values())))
            for c in ratios:  # rounding can exceed a category's room: pass the excess on
                chosen_long[c] += min(give[c], room[c])
            left = min(need, sum(room.values())) - sum(min(give[c], room[c]) for c in ratios)
            for c in sorted(ratios, key=lambda c: high[c] - chosen_long[c], reverse=True):
                extra = min(left, high[c] - chosen_long[c])
                chosen_long[c] += extra
                left -= extra
        reached = sum(chosen_long.values())
        if reached != plan.long_target:
            logger.warning("stage %d: long share %.2f wanted, %.2f reachable with these samples",
                           index, config.long_share, reached / total)
    for c in sorted(ratios):
        if chosen_long is None:
            picked, reused = _take(pools[c], quotas[c], rng)
        else:
            picked, reused_long = _take(longs[c], chosen_long[c], rng)
            more, reused_short = _take(shorts[c], quotas[c] - chosen_long[c], rng)
            picked, reused = picked + more, reused_long + reused_short
        plan.examples += picked
        plan.reused += reused
    rng.shuffle(plan.examples)
    return plan


class StageReport(BaseModel):
    """What one stage's mixture holds."""

    model_config = ConfigDict(extra="forbid")

    stage: int
    length_tokens: int
    samples: int
    tokens: int
    shares: dict[str, float]
    target_shares: dict[str, float]
    long_share: float
    long_target: float | None
    histogram: dict[str, int]
    held_back: int
    joined: dict[str, tuple[int, int]]
    reused: int


class MixReport(BaseModel):
    """The mixing report: every stage, and the data log's counts (read, kept, skipped, filtered)."""

    model_config = ConfigDict(extra="forbid")

    stages: list[StageReport]
    data: dict[str, Any]

    @classmethod
    def build(cls, plans: list[StagePlan], config: MixtureConfig, log: DataLog) -> MixReport:
        """The report of ``plans`` drawn under ``config``."""
        stages = []
        for plan in plans:
            n = max(1, len(plan.examples))
            counts: dict[str, int] = {}
            histogram = {f"{a}-{b}": 0 for a, b in itertools.pairwise(HISTOGRAM_EDGES)}
            histogram[f"{HISTOGRAM_EDGES[-1]}+"] = 0
            for e in plan.examples:
                counts[e.category] = counts.get(e.category, 0) + 1
                bucket = next((f"{a}-{b}" for a, b in itertools.pairwise(HISTOGRAM_EDGES) if e.num_tokens < b),
                              f"{HISTOGRAM_EDGES[-1]}+")
                histogram[bucket] += 1
            long = sum(1 for e in plan.examples if e.num_tokens > config.long_threshold_tokens)
            stages.append(StageReport(
                stage=plan.index, length_tokens=plan.length_tokens, samples=len(plan.examples),
                tokens=sum(e.num_tokens for e in plan.examples),
                shares={c: round(k / n, 4) for c, k in sorted(counts.items())},
                target_shares={c: r for c, r in config.ratios.items() if r > 0},
                long_share=round(long / n, 4), long_target=config.long_share, histogram=histogram,
                held_back=plan.held_back, joined=plan.joined, reused=plan.reused))
        return cls(stages=stages, data=log.summary())

    def notes(self) -> list[str]:
        """One line per source and reason of records left out (skipped as bad data, or filtered),
        for the terminal; empty when every record read was kept."""
        def records(count: int) -> str:
            return f"{count} record{'s' if count != 1 else ''}"

        lines = [f"{records(i['count'])} of {i['source']} skipped: {i['reason']}" for i in self.data["skipped"]]
        for item in self.data["filtered"]:
            hint = " (give it a ratio in data.ratios to train on them)" if item["reason"].endswith("no ratio") else ""
            lines.append(f"{records(item['count'])} of {item['source']} left out: {item['reason']}{hint}")
        return lines

    def to_text(self) -> str:
        """A plain-text rendering for logs and the CLI."""
        lines = []
        for s in self.stages:
            shares = ", ".join(f"{c} {v:.0%} (target {s.target_shares.get(c, 0):.0%})" for c, v in s.shares.items())
            lines.append(f"stage {s.stage}: {s.samples} samples, {s.tokens} tokens, length <= {s.length_tokens}; "
                         f"{shares}; long {s.long_share:.0%}"
                         + (f" (target {s.long_target:.0%})" if s.long_target is not None else "")
                         + f"; held back {s.held_back}, reused {s.reused}")
            lines.append("  lengths: " + ", ".join(f"{k}: {v}" for k, v in s.histogram.items() if v))
        skipped = sum(item["count"] for item in self.data["skipped"])
        filtered = sum(item["count"] for item in self.data["filtered"])
        lines.append(f"data: read {sum(self.data['read'].values())}, kept {sum(self.data['kept'].values())}, "
                     f"skipped {skipped} bad, filtered {filtered}"
                     + (f", augmented {sum(self.data['augmented'].values())}" if self.data.get("augmented") else ""))
        return "\n".join(lines)
