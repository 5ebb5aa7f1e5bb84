"""Which command-line flags Chromium is launched with, and which ones a caller may add.

Every launch gets :data:`SAFETY_CHROMIUM_ARGS` (what the network allowlist relies on) and the
other :data:`DEFAULT_CHROMIUM_ARGS`; flags a user passes (``BrowserConfig.chromium_args``) are
added after them, never instead of them. A flag that would undo a safeguard is refused with
:class:`UnsafeChromiumFlagError` naming it, unless the user opts in explicitly
(``BrowserConfig(allow_unsafe_chromium_args=True)``):

* command prefixes and launchers (``--renderer-cmd-prefix``, ``--utility-cmd-prefix``,
  ``--gpu-launcher``, ``--browser-subprocess-path``, ...): they run a program of their choosing;
* proxy and resolver overrides (``--proxy-server``, ``--no-proxy-server``, ``--proxy-pac-url``,
  ``--host-resolver-rules``, ``--host-rules``, ...): traffic would leave the allowlist proxy;
* WebRTC policy overrides (``--webrtc-ip-handling-policy``, ``--force-webrtc-ip-handling-policy``):
  UDP would leave the proxy (measured: Chromium 156 sends STUN/TURN packets to any address unless
  ``--webrtc-ip-handling-policy=disable_non_proxied_udp`` is set; ``--force-webrtc-...`` alone
  does not stop them);
* ``--disable-web-security``, ``--disable-site-isolation-trials``, ``--remote-allow-origins``
  (lets any page drive the browser through DevTools), remote debugging bound off loopback,
  extensions (``--load-extension``: they can change the proxy), and ``--user-data-dir``;
* anything that is not a flag (a URL to open, a ``--`` terminator, text with spaces before the
  dashes).

Chromium reads ``-flag`` like ``--flag`` on POSIX, so names are compared without their dashes and
in lower case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from giraffe_agent.safety import SafetyError

__all__ = [
    "DEFAULT_CHROMIUM_ARGS",
    "SAFETY_CHROMIUM_ARGS",
    "UnsafeChromiumFlagError",
    "check_chromium_args",
    "launch_args",
]

#: flags the safety of an episode relies on: WebRTC may not send UDP outside the proxy, and
#: Chromium's own background traffic stays off
SAFETY_CHROMIUM_ARGS: tuple[str, ...] = (
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: every flag passed to Chromium by default (Playwright adds its own automation flags, and
#: ``--no-sandbox`` unless ``BrowserConfig.sandbox``)
DEFAULT_CHROMIUM_ARGS: tuple[str, ...] = (*SAFETY_CHROMIUM_ARGS, "--disable-gpu", "--disable-smooth-scrolling")

#: flag names (no dashes, lower case) that undo a safeguard, with why
_UNSAFE: dict[str, str] = {
    **dict.fromkeys(("renderer-cmd-prefix", "utility-cmd-prefix", "gpu-launcher", "zygote-cmd-prefix",
                     "ppapi-plugin-launcher", "plugin-launcher", "nacl-loader-cmd-prefix", "browser-subprocess-path",
                     "renderer-process-launcher"), "runs a program of its choosing"),
    **dict.fromkeys(("proxy-server", "no-proxy-server", "proxy-pac-url", "proxy-bypass-list", "proxy-auto-detect",
                     "winhttp-proxy-resolver", "host-resolver-rules", "host-rules", "ignore-certificate-errors",
                     "ignore-certificate-errors-spki-list"), "takes traffic around the allowlist proxy"),
    **dict.fromkeys(("webrtc-ip-handling-policy", "force-webrtc-ip-handling-policy",
                     "enforce-webrtc-ip-permission-check"), "lets WebRTC send UDP around the allowlist proxy"),
    **dict.fromkeys(("disable-web-security", "disable-site-isolation-trials", "allow-running-insecure-content"),
                    "turns off the browser's web security"),
    "remote-allow-origins": "lets web pages drive the browser through DevTools",
    "remote-debugging-address": "opens DevTools to other machines",
    **dict.fromkeys(("load-extension", "disable-extensions-except"), "loads extensions, which can change the proxy"),
    "user-data-dir": "points the browser at a profile outside the episode",
}
_LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_FLAG = re.compile(r"-{1,2}([A-Za-z0-9][A-Za-z0-9._-]*)(?:=(.*))?", re.DOTALL)


class UnsafeChromiumFlagError(SafetyError):
    """A Chromium flag would undo a safeguard (or is not a flag); the message names each one."""

    code = "unsafe-chromium-flag"


def _refusal(arg: str) -> str | None:
    """Why ``arg`` may not be added to Chromium's command line, or ``None`` when it may."""
    match = _FLAG.fullmatch(arg)
    if match is None:
        return "not a Chromium flag (flags start with '--' and have no spaces before them)"
    name, value = match.group(1).lower(), match.group(2)
    if arg in DEFAULT_CHROMIUM_ARGS:
        return None  # restating a default flag exactly changes nothing
    if name == "remote-debugging-address" and (value or "").strip().lower() in _LOOPBACK_ADDRESSES:
        return None
    return _UNSAFE.get(name)


def check_chromium_args(args: Iterable[str]) -> tuple[str, ...]:
    """``args`` as a tuple, once every one is known not to undo a safeguard.

    Raises:
        UnsafeChromiumFlagError: naming each refused flag and why (the hint names the opt-in).
    """
    args = tuple(args)
    refused = [f"{arg!r} ({why})" for arg in args if (why := _refusal(arg)) is not None]
    if refused:
        raise UnsafeChromiumFlagError(
            "Chromium flag(s) refused: " + "; ".join(refused),
            hint="drop them; to run without the safeguard they undo (never for a run directory or model "
                 "directory from someone else), set BrowserConfig(allow_unsafe_chromium_args=True)")
    return args


def launch_args(extra: Iterable[str], *, allow_unsafe: bool = False) -> list[str]:
    """The full flag list for a launch: :data:`DEFAULT_CHROMIUM_ARGS`, then ``extra``.

    ``extra`` is checked with :func:`check_chromium_args` unless ``allow_unsafe``.
    """
    extra = tuple(extra) if allow_unsafe else check_chromium_args(extra)
    return [*DEFAULT_CHROMIUM_ARGS, *(a for a in extra if a not in DEFAULT_CHROMIUM_ARGS)]
