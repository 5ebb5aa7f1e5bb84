"""Masking secrets in screenshots (:class:`giraffe_agent.envs.browser.BrowserEnv`, ``mask_secrets``).

The attack: a secret typed into a page shows in the screenshot the environment returns (which the
agent stores in ``frames/`` and sends to the model): as glyphs in a text field or textarea, as
bullets in a password field (their number is its length), in a field inside an iframe, in fields
the focus moves through, in a field that keeps only part of it, and as page text echoing it.
Reference: the same page observed with ``mask_secrets=False`` (the control), compared pixel by
pixel inside each field's box (CSS px from the page's own layout): masked, the box is the solid
fill; unmasked, the glyphs differ from it. Loopback pages only.
"""

from __future__ import annotations

import pytest
from browser_fixtures import LoopbackServer, Reply, requires_browser
from PIL import Image

from giraffe_agent.actions import Click, Type
from giraffe_agent.masking import MASK_COLOR
from giraffe_agent.safety import Secrets

pytestmark = [requires_browser, pytest.mark.slow]

SECRET = "p~ss w+rd&%\"'\nçé日本"
VIEWPORT = (640, 400)

FORM = """<!doctype html><meta charset="utf-8"><title>Fields</title>
<body style="margin:0;font:18px sans-serif">
<input id="t" style="position:absolute;left:20px;top:20px;width:260px;height:30px">
<input id="p" type="password" style="position:absolute;left:20px;top:70px;width:260px;height:30px">
<textarea id="a" style="position:absolute;left:20px;top:120px;width:260px;height:60px"></textarea>
<input id="short" maxlength="6" style="position:absolute;left:20px;top:200px;width:260px;height:30px">
<div id="ce" contenteditable="true" style="position:absolute;left:20px;top:250px;width:260px;height:30px;
  border:1px solid #888"></div>
<iframe src="/inner" style="position:absolute;left:320px;top:20px;width:300px;height:80px;border:0"></iframe>
<div id="otp" style="position:absolute;left:320px;top:130px">
  <input maxlength="1" style="width:30px;height:30px;font:20px monospace"><input maxlength="1"
    style="width:30px;height:30px;font:20px monospace"><input maxlength="1"
    style="width:30px;height:30px;font:20px monospace"><input maxlength="1"
    style="width:30px;height:30px;font:20px monospace">
</div>
<script>
  const boxes = Array.from(document.querySelectorAll('#otp input'));
  boxes.forEach((b, i) => b.addEventListener('input', () => { if (b.value && boxes[i + 1]) boxes[i + 1].focus(); }));
</script>"""
INNER = """<!doctype html><meta charset="utf-8"><body style="margin:0">
<input id="i" style="position:absolute;left:10px;top:10px;width:260px;height:30px;font:18px sans-serif">"""
ECHO = """<!doctype html><meta charset="utf-8"><title>Echo</title>
<body style="margin:0;font:18px sans-serif">
<input id="t" style="position:absolute;left:20px;top:20px;width:260px;height:30px">
<button id="go" style="position:absolute;left:20px;top:70px;width:100px;height:30px"
  onclick="show()">Show</button>
<div id="plain" style="position:absolute;left:20px;top:120px"></div>
<div id="spans" style="position:absolute;left:20px;top:170px"></div>
<div id="json" style="position:absolute;left:20px;top:220px"></div>
<div id="other" style="position:absolute;left:20px;top:300px">nothing secret here</div>
<script>
  function show() {
    const v = document.getElementById('t').value;
    document.getElementById('plain').textContent = 'Welcome ' + v;
    const spans = document.getElementById('spans');
    for (const c of v) { const s = document.createElement('span'); s.textContent = c; spans.appendChild(s); }
    document.getElementById('json').textContent = JSON.stringify({password: v});
    document.getElementById('t').remove();
  }
</script>"""


@pytest.fixture(scope="module")
def site():
    server = LoopbackServer({"/form": Reply(FORM), "/inner": Reply(INNER), "/echo": Reply(ECHO)})
    yield server
    server.close()


def observe_after(site, path, actions, *, mask, scale=1.0, secrets=None, measure=None):
    """Run ``actions`` on ``path``; returns the final observation and what the JavaScript
    ``measure`` evaluated to on the final page (or ``None``)."""
    from giraffe_agent.envs.browser import BrowserConfig, SyncBrowserEnv

    config = BrowserConfig(viewport_css=VIEWPORT, device_scale_factor=scale)
    with SyncBrowserEnv(site.url(path), config, secrets=secrets or Secrets(PW=SECRET), mask_secrets=mask) as env:
        obs = env.start()
        transform = obs.transform(obs.image.size)
        for action in actions:
            result = env.act(action, transform)
            assert result.ok, result.message
        obs = env.observe()
        assert obs.image.size == (round(VIEWPORT[0] * scale), round(VIEWPORT[1] * scale))
        return obs, env.evaluate(measure) if measure else None


def region(image: Image.Image, box, scale: float) -> dict[tuple[int, int, int], int]:
    """The colours inside ``box`` (x, y, w, h CSS px, shrunk by 3 CSS px from the border) and
    how many pixels have each."""
    x, y, w, h = box
    crop = image.crop((round((x + 3) * scale), round((y + 3) * scale), round((x + w - 3) * scale),
                       round((y + h - 3) * scale)))
    return {color: count for count, color in crop.convert("RGB").getcolors(1 << 24)}


def is_fill(colors) -> bool:
    return set(colors) == {MASK_COLOR}


def has_glyphs(colors) -> bool:
    """Dark pixels that are not the fill colour itself: typed text."""
    return any(c != MASK_COLOR and sum(c) < 400 for c in colors)


def type_at(x, y, text="{{secret:PW}}"):
    return Type(text=text, x=x, y=y, space="image_px")


FIELDS = {  # what a secret is typed into: the action's point and the box that must be masked
    "text": ((100, 35), (20, 20, 260, 30)),
    "password": ((100, 85), (20, 70, 260, 30)),
    "textarea": ((100, 150), (20, 120, 260, 60)),
    "maxlength": ((100, 215), (20, 200, 260, 30)),
    "contenteditable": ((100, 265), (20, 250, 260, 30)),
    "iframe": ((420, 45), (330, 30, 260, 30)),
}


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_every_field_a_secret_was_typed_into_is_painted_over_and_the_control_shows_it(site, scale):
    actions = [type_at(x * scale, y * scale) for (x, y), _ in FIELDS.values()]
    masked = observe_after(site, "/form", actions, mask=True, scale=scale)[0].image
    shown = observe_after(site, "/form", actions, mask=False, scale=scale)[0].image
    for name, (_, box) in FIELDS.items():
        assert is_fill(region(masked, box, scale)), f"{name} is not masked"
        assert has_glyphs(region(shown, box, scale)), f"the control shows no glyphs in {name}"
    # what is not a field stays as it was: the empty one-character inputs
    otp = (320, 130, 140, 34)
    assert region(masked, otp, scale) == region(shown, otp, scale)


def test_a_field_that_keeps_only_part_of_the_secret_is_followed_by_focus(site):
    """maxlength=6 keeps 'p~ss w': no scan can recognise that; the field is masked because the
    secret was typed into it."""
    secrets = Secrets(PW=SECRET)
    assert secrets.find("p~ss w") == []
    masked = observe_after(site, "/form", [type_at(100, 215)], mask=True, secrets=secrets)[0].image
    assert is_fill(region(masked, FIELDS["maxlength"][1], 1.0))


def test_fields_the_focus_moves_through_are_each_masked(site):
    code = Secrets(CODE="4829")
    actions = [type_at(335, 147, "{{secret:CODE}}")]
    measure = "() => Array.from(document.querySelectorAll('#otp input'), e => [e.value, e.getBoundingClientRect().x, " \
              "e.getBoundingClientRect().y, e.getBoundingClientRect().width, e.getBoundingClientRect().height])"
    masked_obs, fields = observe_after(site, "/form", actions, mask=True, secrets=code, measure=measure)
    shown = observe_after(site, "/form", actions, mask=False, secrets=code)[0].image
    masked = masked_obs.image
    assert [f[0] for f in fields] == ["4", "8", "2", "9"]
    for i, (_, *box) in enumerate(fields):  # each input holds one digit, which alone is no secret
        assert is_fill(region(masked, box, 1.0)), i
        assert has_glyphs(region(shown, box, 1.0)), i


def test_page_text_echoing_the_secret_is_masked_where_it_is_found(site):
    actions = [type_at(100, 35), Click(x=70, y=85, space="image_px")]  # Show: echo it three ways, drop the field
    obs = observe_after(site, "/echo", actions, mask=True)[0]
    masked, shown = obs.image, observe_after(site, "/echo", actions, mask=False)[0].image
    for name, box in {"plain": (20, 120, 300, 24), "spans": (20, 170, 180, 24), "json": (20, 220, 320, 24)}.items():
        pixels = region(masked, box, 1.0)
        assert MASK_COLOR in pixels and not has_glyphs(pixels), f"{name} echo is visible"
        assert has_glyphs(region(shown, box, 1.0)), f"the control shows no {name} echo"
    other = (20, 300, 150, 24)
    assert region(masked, other, 1.0) == region(shown, other, 1.0)  # unrelated text stays readable
    assert not obs.events


def test_a_page_that_cannot_be_checked_is_hidden_whole(site):
    from giraffe_agent.envs.browser import BrowserConfig, SyncBrowserEnv

    with SyncBrowserEnv(site.url("/echo"), BrowserConfig(viewport_css=VIEWPORT), secrets=Secrets(PW=SECRET)) as env:
        env.start()
        env.env._masks.max_chars = 10  # the page now holds more text than the scan may read
        obs = env.observe()
    assert is_fill(region(obs.image, (-3, -3, VIEWPORT[0] + 6, VIEWPORT[1] + 6), 1.0))
    assert obs.events == ["the whole screen is hidden: the page could not be checked for secrets"]
