"""The rope ablation end to end on the tiny preset: two haystack lengths under two rope methods,
every method loaded with the rope parameters ``rope_parameters_for`` gives (the independent
reference), exact token counts, the Table 1 markdown, the JSON and the plot."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from evals import AblationConfig, HaystackConfig, haystack_items, run_rope_ablation
from giraffe_core import rope_parameters_for
from giraffe_core.engine import TINY_CONTEXT_TOKENS, tiny_config


@pytest.mark.slow
def test_two_methods_at_two_lengths_on_the_tiny_preset(tiny_engine, tmp_path):
    config = AblationConfig(methods=("none", "mrope_plus_plus"), sizes=(1, 2), questions_per_size=2,
                            image_size_px=(56, 56), context_length=16384, max_new_tokens=4)
    report = run_rope_ablation("tiny", config, out_dir=tmp_path)
    assert [r.method for r in report.rows] == ["none", "mrope_plus_plus"]
    assert report.context_length == 16384 and report.original_context == TINY_CONTEXT_TOKENS
    for row in report.rows:
        expected = rope_parameters_for(tiny_config(), 16384, row.method)
        assert {k: row.rope_parameters.get(k) for k in expected} == expected
        assert [c.cell["images"] for c in row.cells] == [1, 2] and row.overall.questions == 4
        assert all(q.reply is not None and q.error is None for q in row.questions)
    assert report.rows[1].rope_parameters["factor"] == 4.0
    # the same questions under both methods, with prompts counted exactly
    items = haystack_items(HaystackConfig(sizes=(1, 2), questions_per_cell=2, image_size_px=(56, 56),
                                          max_new_tokens=4))
    for row in report.rows:
        assert [q.id for q in row.questions] == [i.id for i in items]
        assert [q.prompt_tokens for q in row.questions] == [tiny_engine.count_tokens(i.build().messages)
                                                            for i in items]
        assert all(0 < q.position_span <= q.prompt_tokens for q in row.questions)  # images span few positions
    assert report.prompt_tokens[0] < report.prompt_tokens[1]
    assert report.position_span == [max(q.position_span for r in report.rows for q in r.questions
                                        if q.cell["images"] == n) for n in (1, 2)]
    table = (tmp_path / "table.md").read_text()
    assert table == report.table()
    assert "| method \\ images | 1 | 2 | all |" in table
    assert "| direct extrapolation | " in table and "| M-RoPE++ | " in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["eval"] == "rope_ablation" and len(saved["rows"]) == 2
    assert Image.open(tmp_path / "accuracy.png").format == "PNG"
    assert report.accuracy("none", 1) == report.rows[0].cells[0].accuracy


def test_the_default_context_fits_the_longest_prompt_and_never_goes_below_the_original():
    config = AblationConfig(methods=("pi",), sizes=(1,), questions_per_size=2, image_size_px=(56, 56))
    report = run_rope_ablation("tiny", config)
    assert report.context_length == TINY_CONTEXT_TOKENS  # a short prompt: no extension
    assert report.rows[0].rope_parameters.get("factor", 1.0) == 1.0


def test_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="methods"):
        AblationConfig(methods=("none", "rope9000"))
