"""Fine-tuning data of LLaMA-Factory and ms-swift read natively (:mod:`training.data.formats`).

The records are small, faithful instances of each framework's documented formats (LLaMA-Factory's
``mllm_demo.json``, ``mllm_video_demo.json``, glaive tool-call demo, Alpaca and v1 typed parts;
ms-swift's multimodal, agent and grounding examples), written by the tests with generated images
and videos. References: the chat template's rendered text written out by hand (the Qwen tool
format), hand-computed grounding coordinates, the tokenizer's decoding of the labelled tokens,
and the image grids of the encoded sample (which image went where).
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from giraffe_core.engine.processor import ImageTextProcessor
from giraffe_core.resolution import GroupScheme, VisionGeometry, frame_plan
from training.config import MixtureConfig
from training.data import IGNORE_INDEX, DataLog, Encoder, read_sources
from training.data.formats import read_llamafactory, read_swift
from training.data.grounding import BoxConvention
from training.data.video import VideoSettings
from training.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder(tiny_engine):
    return Encoder(tiny_engine.processor, tiny_engine.tokens)


def png(path: Path, size=(64, 48), colour=(200, 30, 30), mode="RGB") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path.name


def mp4(path: Path, frames: int = 8, size=(112, 84)) -> str:
    """A ``frames / 4`` second clip at 4 fps whose frames fade from black to red."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for k in range(frames):
            for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", size, (30 * k, 0, 0)))):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.name


def write(path: Path, records: list) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=2))
    return path


def video_settings(tmp_path: Path, encoder: Encoder) -> VideoSettings:
    return VideoSettings(tmp_path / "frames", VisionGeometry.from_processor(encoder.processor), fps=2, max_frames=4,
                         scheme=GroupScheme(group_size=2, high_tokens=12, ratio=3))


def targets(encoder: Encoder, example) -> str:
    sample = encoder.encode(example)
    return encoder.tokenizer.decode(sample.labels[sample.labels != IGNORE_INDEX].tolist())


def kinds(example) -> list[str]:
    """The chat's parts in order: ``text``, ``image`` (a record's image) or ``frame`` (a video frame)."""
    out = []
    for message in example.messages:
        for part in [] if isinstance(message["content"], str) else message["content"]:
            out.append("frame" if part["type"] == "image" and "tier" in part else part["type"])
    return out


def images(example) -> list[str]:
    return [Path(p["image"]).name for m in example.messages if not isinstance(m["content"], str)
            for p in m["content"] if p["type"] == "image" and "tier" not in p]


# --------------------------------------------------------------------------------------------------
# LLaMA-Factory
# --------------------------------------------------------------------------------------------------


def test_llamafactory_demo_records_images_video_sharegpt_alpaca_v1(tmp_path, encoder):
    png(tmp_path / "mllm_demo_data" / "1.jpg.png")
    png(tmp_path / "mllm_demo_data" / "2.png", (48, 64), (30, 30, 200))
    mp4(tmp_path / "mllm_demo_data" / "1.mp4")
    records = [
        {"messages": [{"content": "<image>Who are they?", "role": "user"},
                      {"content": "They're two players.", "role": "assistant"},
                      {"content": "What are they doing?<image>", "role": "user"},
                      {"content": "Celebrating.", "role": "assistant"}],
         "images": ["mllm_demo_data/1.jpg.png", "mllm_demo_data/2.png"]},
        {"messages": [{"content": "<video>Why is this video funny?", "role": "user"},
                      {"content": "It fades to red.", "role": "assistant"}], "videos": ["mllm_demo_data/1.mp4"]},
        {"conversations": [{"from": "human", "value": "<image>What colour?"}, {"from": "gpt", "value": "Red."}],
         "system": "Answer briefly.", "images": ["mllm_demo_data/1.jpg.png"]},
        {"instruction": "<image>Describe it.", "input": "In one word.", "output": "Red.",
         "images": ["mllm_demo_data/1.jpg.png"], "history": [["Hello", "Hi."]]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "mllm_demo_data/2.png"},
                                                   {"type": "text", "value": "What colour?"}], "loss_weight": 0.0},
                      {"role": "assistant", "content": [{"type": "text", "value": "Blue."}], "loss_weight": 1.0}]},
    ]
    path = write(tmp_path / "mllm_demo.json", records)
    log = DataLog("fail")
    examples = read_llamafactory(path, log, label="lf", video=video_settings(tmp_path, encoder))
    assert [e.category for e in examples] == ["interleaved", "video", "short_visual", "short_visual", "short_visual"]
    demo, video, sharegpt, alpaca, v1 = examples
    assert kinds(demo) == ["image", "text", "text", "image"] and images(demo) == ["1.jpg.png", "2.png"]
    assert targets(encoder, demo) == "They're two players.<|im_end|>Celebrating.<|im_end|>"
    assert kinds(video) == ["text", "frame"] * 4 + ["text"]
    assert video.messages[0]["content"][-1]["text"] == "Why is this video funny?"
    assert targets(encoder, video) == "It fades to red.<|im_end|>"
    assert sharegpt.messages[0] == {"role": "system", "content": "Answer briefly."}
    assert [m["role"] for m in alpaca.messages] == ["user", "assistant", "user", "assistant"]
    assert alpaca.messages[2]["content"][1:] == [{"type": "text", "text": "Describe it.\nIn one word."}]
    assert targets(encoder, alpaca) == "Hi.<|im_end|>Red.<|im_end|>"
    assert images(v1) == ["2.png"] and targets(encoder, v1) == "Blue.<|im_end|>"


def test_a_zero_loss_weight_assistant_turn_is_context_not_target(tmp_path, encoder):
    record = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1",
                                                                "loss_weight": 0},
                           {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}
    (example,) = read_llamafactory(write(tmp_path / "w.jsonl", [record]), DataLog("fail"), label="w")
    assert targets(encoder, example) == "A2<|im_end|>"
    assert "A1" in encoder._layout(example).text  # still in the context
    with pytest.raises(DataError, match="loss_weight must be 0 or 1"):
        record["messages"][1]["loss_weight"] = 0.5
        read_llamafactory(write(tmp_path / "half.jsonl", [record]), DataLog("fail"), label="w")


# --------------------------------------------------------------------------------------------------
# ms-swift, typed parts, images and videos in one record
# --------------------------------------------------------------------------------------------------


def test_images_and_videos_in_one_record_keep_their_order(tmp_path, encoder):
    png(tmp_path / "a.png", (56, 56))
    png(tmp_path / "b.png", (112, 56), (0, 0, 200))
    mp4(tmp_path / "v.mp4")
    record = {"messages": [{"role": "user", "content": "<image>First, then <video> then <image> - same?"},
                           {"role": "assistant", "content": "No."}],
              "images": ["a.png", "b.png"], "videos": ["v.mp4"]}
    settings = video_settings(tmp_path, encoder)
    (example,) = read_swift(write(tmp_path / "mixed.jsonl", [record]), DataLog("fail"), label="m", video=settings)
    assert example.category == "video"
    assert kinds(example) == ["image", "text"] + ["text", "frame"] * 4 + ["text", "image", "text"]
    assert images(example) == ["a.png", "b.png"]
    sample = encoder.encode(example)
    grids = [tuple(g) for g in sample.image_grid_thw.tolist()]
    geometry = settings.geometry
    default = geometry.max_pixels // geometry.token_side_px ** 2
    assert grids[0] == frame_plan((56, 56), default, geometry).grid_thw  # the first image, then the frames
    assert grids[-1] == frame_plan((112, 56), default, geometry).grid_thw  # the second image last
    assert len(grids) == 6


def test_typed_parts_carry_their_own_path_and_the_list_fills_the_rest(tmp_path, encoder):
    for name, size in (("own.png", (56, 56)), ("url.png", (84, 56)), ("value.png", (112, 56)), ("listed.png",
                                                                                               (56, 84))):
        png(tmp_path / name, size)
    buffer = io.BytesIO()
    Image.new("RGB", (168, 56), (9, 9, 9)).save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    record = {"messages": [{"role": "user", "content": [
        {"type": "image", "image": "own.png"},
        {"type": "image_url", "image_url": {"url": f"file://{tmp_path / 'url.png'}"}},
        {"type": "image"},  # takes the first (only) entry of the list
        {"type": "image_url", "value": "value.png"},
        {"type": "image_url", "image_url": data_url},
        {"type": "text", "text": "Which is widest?"}]}, {"role": "assistant", "content": "The last."}],
        "images": ["listed.png"]}
    (example,) = read_swift(write(tmp_path / "parts.jsonl", [record]), DataLog("fail"), label="p")
    assert example.category == "interleaved"
    sample = encoder.encode(example)
    widths = [w * 14 for _, _, w in sample.image_grid_thw.tolist()]
    assert widths == [56, 84, 56, 112, 168]  # own, url, listed, value, data: URL, in the parts' order
    record["images"] = ["listed.png", "listed.png"]  # a list entry no part takes is an error, not ignored
    with pytest.raises(DataError, match="1 <image> tags for 2 images"):
        read_swift(write(tmp_path / "extra.jsonl", [record]), DataLog("fail"), label="p")


def test_a_remote_image_url_is_refused_without_a_connection(tmp_path):
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            buffer = io.BytesIO()
            Image.new("RGB", (28, 28)).save(buffer, format="PNG")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(buffer.getvalue())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cat.png"
        record = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                            {"type": "text", "text": "?"}]},
                               {"role": "assistant", "content": "A cat."}]}
        log = DataLog("skip")
        assert read_swift(write(tmp_path / "remote.jsonl", [record]), log, label="r") == []
        assert "local files only" in log.problems[0].reason and hits == []
        with urllib.request.urlopen(url, timeout=5) as answer:  # control: the URL was reachable
            assert answer.status == 200 and hits == ["/cat.png"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_oversized_inline_and_header_images_are_refused_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    png(huge, (9000, 8000), 0, mode="1")  # 72 Mpx declared in a small file
    png(tmp_path / "fine.png", (1000, 1000), 0, mode="1")  # control: the same kind of image, within the limit
    buffer = io.BytesIO()
    Image.new("1", (9000, 8000)).save(buffer, format="PNG")
    inline = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    def record(image):
        return {"messages": [{"role": "user", "content": "<image>?"}, {"role": "assistant", "content": "!"}],
                "images": [image]}

    log = DataLog("skip")
    kept = read_swift(write(tmp_path / "big.jsonl", [record(inline), record("fine.png")]), log, label="b")
    assert len(kept) == 1 and "over the limit" in log.problems[0].reason


def test_a_data_url_over_the_byte_limit_is_not_decoded(tmp_path, monkeypatch):
    from training.data import media

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    decoded, decode = [], base64.b64decode
    monkeypatch.setattr(media.base64, "b64decode", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    assert isinstance(media.image_payload(url, tmp_path), bytes) and decoded == [1]  # control: within the limit
    monkeypatch.setattr(media, "MAX_DATA_URL_BYTES", len(buffer.getvalue()) - 1)
    with pytest.raises(media.BadRecord, match="over the limit"):
        media.image_payload(url, tmp_path)
    assert decoded == [1]  # refused from its length: never decoded


# --------------------------------------------------------------------------------------------------
# tools
# --------------------------------------------------------------------------------------------------

WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
#: what Qwen's tool-aware chat template renders for one tool, one call, one response (written out by hand)
RENDERED = (
    "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist "
    "with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": '
    '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n</tools>\n\n'
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWeather in Zürich?<|im_end|>\n"
    '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>'
    "<|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp_c\": 21}\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n21 °C.<|im_end|>\n")
CALL = {"name": "get_weather", "arguments": {"city": "Zürich"}}


def tool_records() -> tuple[dict, dict]:
    """The same exchange as LLaMA-Factory (ShareGPT, tools a JSON string) and ms-swift write it."""
    factory = {"conversations": [{"from": "human", "value": "Weather in Zürich?"},
                                 {"from": "function_call", "value": json.dumps(CALL, ensure_ascii=False)},
                                 {"from": "observation", "value": '{"temp_c": 21}'},
                                 {"from": "gpt", "value": "21 °C."}], "tools": json.dumps([WEATHER])}
    swift = {"tools": [{"type": "function", "function": WEATHER}],
             "messages": [{"role": "user", "content": "Weather in Zürich?"},
                          {"role": "tool_call", "content": json.dumps({**CALL, "arguments": json.dumps(CALL[
                              "arguments"])})},  # arguments as a JSON string, as OpenAI sends them
                          {"role": "tool_response", "content": '{"temp_c": 21}'},
                          {"role": "assistant", "content": "21 °C."}]}
    return factory, swift


def test_tools_render_as_the_qwen_template_renders_them(tmp_path, encoder):
    factory, swift = tool_records()
    (a,) = read_llamafactory(write(tmp_path / "glaive.json", [factory]), DataLog("fail"), label="f")
    (b,) = read_swift(write(tmp_path / "agent.jsonl", [swift]), DataLog("fail"), label="s")
    assert a.category == b.category == "long_text"
    assert encoder._layout(a).text == encoder._layout(b).text == RENDERED
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>'
    assert targets(encoder, a) == targets(encoder, b) == f"{call}<|im_end|>21 °C.<|im_end|>"


TOOLS_TEMPLATE = (  # a chat template that renders tools itself (as Qwen2.5's and Qwen3's do)
    "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %} {{ t['function']['name'] }}{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_a_template_that_renders_tools_renders_them_itself(tmp_path, tiny_engine, encoder):
    processor = ImageTextProcessor(tiny_engine.processor.image_processor, tiny_engine.processor.tokenizer,
                                   chat_template=TOOLS_TEMPLATE)
    own = Encoder(processor, tiny_engine.tokens)
    _, swift = tool_records()
    (example,) = read_swift(write(tmp_path / "agent.jsonl", [swift]), DataLog("fail"), label="s")
    text = own._layout(example).text
    assert own.template_renders_tools and text.startswith("<|im_start|>system\nTOOLS: get_weather<|im_end|>\n")
    assert "# Tools" not in text and targets(own, example).endswith("21 °C.<|im_end|>")
    assert not encoder.template_renders_tools and "# Tools" in encoder._layout(example).text  # control


def test_parallel_calls_join_the_assistant_turn_and_responses_merge(tmp_path, encoder):
    png(tmp_path / "shot.png", (56, 56))
    record = {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "Paris and Rome?"},
        {"role": "assistant", "content": "Checking both."},
        {"role": "tool_call", "content": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                     {"name": "get_weather", "arguments": {"city": "Rome"}}])},
        {"role": "tool_response", "content": "20"}, {"role": "tool_response", "content": "<image>25"},
        {"role": "assistant", "content": "20 and 25."}], "images": ["shot.png"]}
    (example,) = read_swift(write(tmp_path / "par.jsonl", [record]), DataLog("fail"), label="p")
    roles = [m["role"] for m in example.messages]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert example.messages[1]["content"] == (
        'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')
    calls = json.loads(record["messages"][2]["content"])
    record["messages"][2:3] = [{"role": "tool_call", "content": json.dumps(c)} for c in calls]  # one turn each
    (again,) = read_swift(write(tmp_path / "seq.jsonl", [record]), DataLog("fail"), label="p")
    assert again.messages == example.messages
    response = example.messages[2]["content"]
    assert "".join(p.get("text", "<IMG>") for p in response) == (
        "<tool_response>\n20\n</tool_response>\n<tool_response>\n<IMG>25\n</tool_response>")
    assert example.category == "short_visual"


# --------------------------------------------------------------------------------------------------
# grounding
# --------------------------------------------------------------------------------------------------


def grounding_record(image: str, **objects) -> dict:
    return {"messages": [{"role": "user", "content": "<image>Find <ref-object>"},
                         {"role": "assistant", "content": "<bbox>"}], "images": [image], "objects": objects}


@pytest.mark.parametrize("box_format,budget,bbox_type,bbox,expected", [
    # 640x480 image: 64/640*1000 = 100, 48/480*1000 = 100, 320/640*1000 = 500, 240/480*1000 = 500
    ("qwen2_vl", None, "real", [64, 48, 320, 240], "<|box_start|>(100,100),(500,500)<|box_end|>"),
    ("qwen2_vl", None, "norm1", [0.25, 0.5, 0.7504, 1.0], "<|box_start|>(250,500),(750,1000)<|box_end|>"),
    # resized to 644x476 (23 x 17 tokens of 28 px): 64*644/640 = 64.4, 48*476/480 = 47.6, 322, 238
    ("qwen2_5_vl", None, "real", [64, 48, 320, 240], "[64, 48, 322, 238]"),
    # under 100 tokens (78,400 px): 640x480 scales by 1/sqrt(307200/78400) = 0.5052, floored to 308x224;
    # 64*308/640 = 30.8, 48*224/480 = 22.4, 320*308/640 = 154, 240*224/480 = 112
    ("qwen2_5_vl", 100, "real", [64, 48, 320, 240], "[31, 22, 154, 112]"),
    ("qwen2_5_vl", 100, "norm1", [0.1, 0.1, 0.5, 0.5], "[31, 22, 154, 112]"),  # 0.1*308 = 30.8, 0.1*224 = 22.4
])
def test_grounding_boxes_match_hand_computed_values(tmp_path, box_format, budget, bbox_type, bbox, expected):
    png(tmp_path / "field.png", (640, 480), (0, 160, 0))
    record = grounding_record("field.png", ref=["sheep"], bbox=[bbox], bbox_type=bbox_type)
    boxes = BoxConvention(box_format, VisionGeometry(), budget)
    (example,) = read_swift(write(tmp_path / "g.jsonl", [record]), DataLog("fail"), label="g", boxes=boxes)
    ref = "sheep" if box_format == "qwen2_5_vl" else "<|object_ref_start|>sheep<|object_ref_end|>"
    assert example.messages[0]["content"][1:] == [{"type": "text", "text": f"Find {ref}"}]
    assert example.messages[1]["content"] == expected


def test_grounding_auto_follows_the_model_and_checks_counts(tmp_path, tiny_engine):
    png(tmp_path / "a.png", (640, 480))
    png(tmp_path / "b.png", (200, 100))
    two = {"messages": [{"role": "user", "content": "<image><image>Where are <ref-object> and <ref-object>?"},
                        {"role": "assistant", "content": "<bbox> and <bbox>"}], "images": ["a.png", "b.png"],
           "objects": {"ref": ["a dog", "a cat"], "bbox": [[64, 48, 320, 240], [20, 10, 100, 50]],
                       "image_id": [0, 1]}}
    bad = [grounding_record("a.png", ref=["x"], bbox=[[1, 2, 3, 4], [1, 2, 3, 4]]),  # one <bbox>, two boxes
           grounding_record("a.png", ref=["x"], bbox=[[1, 2, 3, 4]], image_id=[3]),
           {"messages": [{"role": "user", "content": "<bbox>"}, {"role": "assistant", "content": "ok"}]}]
    path = write(tmp_path / "g.jsonl", [two, *bad])
    config = MixtureConfig(sources=[{"kind": "swift", "path": str(path)}], ratios={"interleaved": 1.0},
                           long_share=None, concatenate=[])
    answers = {}
    for name, tokens in (("qwen2_vl", tiny_engine.tokens), ("qwen2_5_vl", replace(tiny_engine.tokens,
                                                                                  tokens_per_second=2))):
        log = DataLog("skip")
        (example,) = read_sources(config, Encoder(tiny_engine.processor, tokens), max_length_tokens=4096,
                                  frames_dir=tmp_path, log=log)
        answers[name] = example.messages[1]["content"]
        reasons = [p.reason for p in log.problems]
    assert answers == {"qwen2_vl": "<|box_start|>(100,100),(500,500)<|box_end|> and "
                                   "<|box_start|>(100,100),(500,500)<|box_end|>",
                       # b.png: 200x100 resized to 196x112 (7 x 4 tokens): 20*196/200 = 19.6, 10*112/100 = 11.2,
                       # 100*196/200 = 98, 50*112/100 = 56; in 0..1000 the same 100, 100, 500, 500 as a.png's box
                       "qwen2_5_vl": "[64, 48, 322, 238] and [20, 11, 98, 56]"}
    assert reasons[0].startswith("1 <ref-object> and 1 <bbox> tags for 1 refs and 2 boxes")
    assert reasons[1].startswith("a bbox of image 3") and reasons[2].startswith("more <bbox> tags")
