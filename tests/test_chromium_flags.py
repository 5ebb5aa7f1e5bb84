"""Chromium's flags: the safety flags are always there, flags that undo a safeguard are refused, and
WebRTC cannot send UDP around the allowlist.

The WebRTC attack: an allowed page asks for STUN and TURN servers at a loopback address the
allowlist does not name (127.0.0.2), which makes Chromium send UDP binding requests there. A UDP
socket bound to that address counts what arrives: nothing with the default flags, packets when the
WebRTC flag is overridden (the control: the attack is real, so the test can fail).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from browser_fixtures import LoopbackServer, Reply, requires_browser

from giraffe_agent.envs import (
    DEFAULT_CHROMIUM_ARGS,
    SAFETY_CHROMIUM_ARGS,
    BrowserConfig,
    SyncBrowserEnv,
    UnsafeChromiumFlagError,
    check_chromium_args,
    launch_args,
)
from giraffe_agent.safety import SafetyError, SafetyPolicy
from giraffe_core.errors import GiraffeError

REFUSED = [
    "--renderer-cmd-prefix=/tmp/x.sh", "--utility-cmd-prefix=/tmp/x.sh", "--gpu-launcher=/tmp/x.sh",
    "--zygote-cmd-prefix=/tmp/x.sh", "--browser-subprocess-path=/tmp/x.sh", "-renderer-cmd-prefix=/tmp/x.sh",
    "--Renderer-Cmd-Prefix=/tmp/x.sh", "--proxy-server=http://evil:8080", "--no-proxy-server",
    "--proxy-pac-url=http://evil/p.pac", "--proxy-bypass-list=*", "--host-resolver-rules=MAP * 10.0.0.1",
    "--host-rules=MAP * evil", "--webrtc-ip-handling-policy=default", "--force-webrtc-ip-handling-policy=default",
    "--disable-web-security", "--remote-allow-origins=*", "--remote-debugging-address=0.0.0.0",
    "--load-extension=/tmp/ext", "--user-data-dir=/tmp/profile", "--ignore-certificate-errors",
    "http://evil.example/", "--", " --renderer-cmd-prefix=x", "--proxy-server\n=x",
]
ALLOWED = ["--disable-gpu", "--lang=fr", "--remote-debugging-address=127.0.0.1", "--window-size=800,600",
           "--webrtc-ip-handling-policy=disable_non_proxied_udp", "--js-flags=--max-old-space-size=512"]


@pytest.mark.parametrize("flag", REFUSED)
def test_flags_that_undo_a_safeguard_are_refused_by_name(flag):
    with pytest.raises(UnsafeChromiumFlagError) as info:
        check_chromium_args(["--lang=en", flag])
    assert repr(flag) in str(info.value) and info.value.code == "unsafe-chromium-flag"
    assert isinstance(info.value, SafetyError) and isinstance(info.value, GiraffeError)
    assert "allow_unsafe_chromium_args" in info.value.hint
    with pytest.raises(UnsafeChromiumFlagError):  # the config refuses it when it is made, before any launch
        BrowserConfig(chromium_args=(flag,))


@pytest.mark.parametrize("flag", ALLOWED)
def test_ordinary_flags_are_accepted(flag):
    assert check_chromium_args([flag]) == (flag,)


def test_every_refused_flag_is_named_in_one_error():
    with pytest.raises(UnsafeChromiumFlagError) as info:
        check_chromium_args(["--disable-web-security", "--lang=en", "--proxy-server=x"])
    assert "--disable-web-security" in str(info.value) and "--proxy-server=x" in str(info.value)
    assert "--lang=en" not in str(info.value)


def test_user_flags_are_added_to_the_defaults_never_instead_of_them():
    assert set(SAFETY_CHROMIUM_ARGS) <= set(DEFAULT_CHROMIUM_ARGS)
    assert "--webrtc-ip-handling-policy=disable_non_proxied_udp" in SAFETY_CHROMIUM_ARGS
    args = launch_args(("--lang=fr", "--disable-gpu"))
    assert args[: len(DEFAULT_CHROMIUM_ARGS)] == list(DEFAULT_CHROMIUM_ARGS)
    assert args.count("--disable-gpu") == 1 and args[-1] == "--lang=fr"
    assert BrowserConfig().chromium_args == ()  # nothing to replace: the defaults are not a field value


def test_the_unsafe_opt_in_is_explicit():
    config = BrowserConfig(chromium_args=("--disable-web-security",), allow_unsafe_chromium_args=True)
    assert launch_args(config.chromium_args, allow_unsafe=True)[-1] == "--disable-web-security"
    with pytest.raises(UnsafeChromiumFlagError):
        launch_args(config.chromium_args)


# --------------------------------------------------------------------------------------------
# WebRTC
# --------------------------------------------------------------------------------------------

_WEBRTC_PAGE = """<!doctype html><title>rtc</title><body><script>
(async () => {
  for (const urls of ['stun:127.0.0.2:%(port)d', 'turn:127.0.0.2:%(port)d?transport=udp']) {
    try {
      const pc = new RTCPeerConnection({iceServers: [{urls, username: 'u', credential: 'p'}]});
      pc.createDataChannel('x');
      await pc.setLocalDescription(await pc.createOffer());
    } catch (e) { document.title = 'error ' + e; }
  }
  document.title = 'started';
})();
</script></body>"""


def _udp_packets_during_page(tmp_path: Path, config: BrowserConfig) -> tuple[int, str]:
    """UDP datagrams that reach 127.0.0.2 while an allowed page tries STUN and TURN there, and the
    page's title (``"started"`` once both peer connections gathered)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.2", 0))
    udp.settimeout(0.2)
    site = LoopbackServer({"/": Reply(_WEBRTC_PAGE % {"port": udp.getsockname()[1]})})
    try:
        with SyncBrowserEnv(site.url("/"), config, SafetyPolicy()) as env:
            env.start()
            time.sleep(2.0)  # ICE gathering sends its first binding requests within ~100 ms
            title = env.observe().title
        packets = 0
        try:
            while True:
                udp.recvfrom(4096)
                packets += 1
        except TimeoutError:
            pass
        return packets, title
    finally:
        site.close()
        udp.close()


@requires_browser
@pytest.mark.slow
def test_webrtc_sends_no_udp_outside_the_proxy(tmp_path):
    packets, title = _udp_packets_during_page(tmp_path, BrowserConfig(viewport_css=(320, 240)))
    assert title == "started"  # the page really asked for STUN and TURN
    assert packets == 0


@requires_browser
@pytest.mark.slow
def test_control_without_the_webrtc_flag_udp_gets_through(tmp_path):
    config = BrowserConfig(viewport_css=(320, 240), allow_unsafe_chromium_args=True,
                           chromium_args=("--webrtc-ip-handling-policy=default",))
    packets, title = _udp_packets_during_page(tmp_path, config)
    assert title == "started" and packets > 0
