"""Safety: which hosts the browser may reach, what needs a human's approval, budgets, and secrets.

* :class:`SafetyPolicy` (pydantic, ``extra="forbid"``): the domain allowlist, ``file://`` and
  download switches, step and time budgets, and the action kinds that need approval.
* :class:`UrlGuard`: the allowlist compiled for one start URL. The browser environment
  (:mod:`giraffe_agent.envs.browser`) enforces it at the NETWORK layer for every request of every
  page (subresources, fetch/XHR, iframes, popups, redirects, WebSockets), not just for ``goto``.
* :class:`Budget`: counts steps and seconds against the policy's limits.
* :class:`Secrets` (defined in :mod:`giraffe_agent.redaction`, re-exported here): values passed
  by name. A model writes ``{{secret:NAME}}``; the environment fills the value in only at the
  moment it types, and :meth:`Secrets.redact` replaces every value, in every encoding that module
  lists, by its placeholder in logs, trajectories, reports and what is sent to a model.

Allowlist patterns (``SafetyPolicy.allowed_domains``), matched case-insensitively:

==========================  ================================================================
``"example.com"``           the host ``example.com`` on any port (not its subdomains)
``"*.example.com"``         any subdomain of ``example.com`` at any depth (not the apex itself:
                            list both to allow both)
``"127.0.0.1:8000"``        that host on that port only (a URL without a port has its scheme's
                            default port: 80 for http/ws, 443 for https/wss)
``"[::1]:8000"``            IPv6 literals in brackets
``"*"``                     every host (not recommended)
==========================  ================================================================

An EMPTY list (the default) allows only the start URL's host, and only its port when the start
URL names one (``http://127.0.0.1:8000/`` allows ``127.0.0.1:8000``; ``https://shop.example/``
allows ``shop.example`` on any port). That keeps a fresh policy closed: a page cannot make the
agent talk to a second site, not even another server on the same machine, unless that site is
listed.

Schemes: ``http``, ``https``, ``ws``, ``wss`` are checked against the hosts; ``file`` only when
``allow_file_urls``; ``data:``, ``blob:``, ``about:blank`` and ``about:srcdoc`` are always allowed
(no network); every other scheme (``javascript:``, ``chrome:``, ``ftp:``...) is refused.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from giraffe_agent.actions import Action, KeyPress, Type
from giraffe_agent.redaction import SecretError, Secrets
from giraffe_core.errors import GiraffeError

__all__ = [
    "BLOCKED_NOT_ALLOWED",
    "Budget",
    "BudgetExceededError",
    "HostPattern",
    "RiskKind",
    "SafetyError",
    "SafetyPolicy",
    "SecretError",
    "Secrets",
    "UrlGuard",
]

logger = logging.getLogger(__name__)

#: the reason :class:`UrlGuard` gives for a host that is not allowed (quoted in events)
BLOCKED_NOT_ALLOWED = "not in allowed domains"

#: What may need approval: any action tag, plus two situations.
#: ``"secret"``: a :class:`~giraffe_agent.actions.Type` that types a secret (by reference or by value);
#: ``"submit"``: a Type with ``submit=True``, or a KeyPress of Enter (usually submits a form).
RiskKind = Literal[
    "secret", "submit",
    "click", "double_click", "right_click", "type", "key", "scroll", "drag", "goto", "back", "wait", "select",
]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST_SCHEMES = frozenset(_DEFAULT_PORTS)
_LOCAL_SCHEMES = frozenset({"data", "blob"})
_ABOUT_ALLOWED = frozenset({"about:blank", "about:srcdoc"})



class SafetyError(GiraffeError, PermissionError):
    """Something the safety policy forbids (a start URL outside the allowlist, an exhausted budget)."""

    code = "safety-error"


class BudgetExceededError(SafetyError):
    """The step or time budget of an episode is used up."""

    code = "budget-exceeded"


# --------------------------------------------------------------------------------------------
# Domain allowlist
# --------------------------------------------------------------------------------------------

def _normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:  # an IPv6 literal: compared as an address, in its compressed form
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return host
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return host


@dataclass(frozen=True)
class HostPattern:
    """One parsed allowlist entry: ``host`` (lower case, IDNA, no brackets), ``port`` (``None`` = any),
    ``subdomains`` (True for ``*.host``: strict subdomains only), or ``any_host`` for ``"*"``."""

    host: str
    port: int | None = None
    subdomains: bool = False
    any_host: bool = False

    @classmethod
    def parse(cls, pattern: str) -> HostPattern:
        """Parse ``"host"``, ``"host:port"``, ``"*.host[:port]"``, ``"[v6]:port"`` or ``"*"``.

        Raises:
            ValueError: a scheme, path, empty host or bad port (pydantic reports it for the policy).
        """
        text = pattern.strip().lower()
        if not text:
            raise ValueError("an allowed domain must not be empty")
        if "://" in text or "/" in text:
            raise ValueError(f"allowed domain {pattern!r}: give a host pattern such as 'example.com', "
                             "'*.example.com' or '127.0.0.1:8000', without scheme or path")
        if text == "*":
            return cls(host="*", any_host=True)
        port: int | None = None
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"allowed domain {pattern!r}: unclosed '[' in an IPv6 host")
            host, rest = text[1:end], text[end + 1:]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"allowed domain {pattern!r}: expected ':port' after ']'")
                port = cls._port(rest[1:], pattern)
        elif text.count(":") == 1:
            host, port_text = text.split(":")
            port = cls._port(port_text, pattern)
        elif ":" in text:
            raise ValueError(f"allowed domain {pattern!r}: write IPv6 hosts in brackets, e.g. '[::1]:8000'")
        else:
            host = text
        subdomains = host.startswith("*.")
        if subdomains:
            host = host[2:]
        if not host or "*" in host:
            raise ValueError(f"allowed domain {pattern!r}: '*' is only allowed as a leading '*.' or alone")
        return cls(host=_normalize_host(host), port=port, subdomains=subdomains)

    @staticmethod
    def _port(text: str, pattern: str) -> int:
        if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
            raise ValueError(f"allowed domain {pattern!r}: bad port {text!r}")
        return int(text)

    def matches(self, host: str, port: int) -> bool:
        """True if ``host`` (already normalized) on ``port`` matches this pattern."""
        if self.any_host:
            return True
        if self.port is not None and port != self.port:
            return False
        if self.subdomains:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        if self.any_host:
            return "*"
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = f"*.{host}" if self.subdomains else host
        return host if self.port is None else f"{host}:{self.port}"


class UrlGuard:
    """The allowlist compiled for one episode: says whether a URL or a host:port may be reached.

    Build it with :meth:`SafetyPolicy.url_guard`. Methods return ``None`` when allowed, else a
    short reason quoted in events and messages (e.g. ``"not in allowed domains"``).
    """

    def __init__(self, patterns: Sequence[HostPattern], *, allow_file_urls: bool = False) -> None:
        self.patterns = tuple(patterns)
        self.allow_file_urls = allow_file_urls

    def check_host(self, host: str, port: int) -> str | None:
        """Reason ``host`` on ``port`` is refused, or ``None`` when some pattern allows it."""
        host = _normalize_host(host)
        if any(p.matches(host, port) for p in self.patterns):
            return None
        return BLOCKED_NOT_ALLOWED

    def check(self, url: str) -> str | None:
        """Reason ``url`` is refused, or ``None`` when it may be loaded (see the module doc for schemes)."""
        try:
            parts = urlsplit(url.strip())
            scheme = parts.scheme.lower()
            if scheme in _HOST_SCHEMES:
                host = parts.hostname
                port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port
                if port == 0:
                    raise ValueError("port 0")
            else:
                host, port = None, 0
        except ValueError:  # e.g. a port out of range
            return "malformed URL"
        if scheme in _HOST_SCHEMES:
            if not host:
                return "URL without a host"
            return self.check_host(host, port)
        if scheme == "file":
            return None if self.allow_file_urls else "file:// URLs are not allowed"
        if scheme in _LOCAL_SCHEMES:
            return None
        if scheme == "about":
            return None if url.strip().lower().split("#")[0] in _ABOUT_ALLOWED else "about: pages are not allowed"
        if not scheme:
            return "URL without a scheme"
        return f"{scheme}: URLs are not allowed"

    def allows(self, url: str) -> bool:
        """True if ``url`` may be loaded."""
        return self.check(url) is None

    def describe(self) -> str:
        """The allowed hosts as one line, for messages."""
        return ", ".join(str(p) for p in self.patterns) or "(none)"


# --------------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------------

class Budget:
    """Steps and wall-clock seconds used by an episode, against optional limits.

    The clock starts when the budget is created (or at :meth:`restart`). The agent loop calls
    :meth:`record_step` once per executed action and :meth:`check` (or :meth:`exhausted`) before
    each step.

    Args:
        max_steps: most actions, or ``None`` for no limit.
        max_seconds: most seconds since the start, or ``None`` for no limit.
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, max_steps: int | None = None, max_seconds: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self._clock = clock
        self._start = clock()
        self.steps = 0

    def restart(self) -> None:
        """Zero the step count and restart the clock."""
        self._start = self._clock()
        self.steps = 0

    def record_step(self) -> None:
        """Count one step."""
        self.steps += 1

    @property
    def elapsed_s(self) -> float:
        """Seconds since the start."""
        return self._clock() - self._start

    @property
    def remaining_steps(self) -> int | None:
        """Steps left (never negative), or ``None`` without a step limit."""
        return None if self.max_steps is None else max(0, self.max_steps - self.steps)

    @property
    def remaining_s(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a time limit."""
        return None if self.max_seconds is None else max(0.0, self.max_seconds - self.elapsed_s)

    def exhausted(self) -> str | None:
        """Why the budget is used up, or ``None`` while steps and time remain."""
        if self.max_steps is not None and self.steps >= self.max_steps:
            return f"step budget used up ({self.steps} of {self.max_steps} steps)"
        if self.max_seconds is not None and (elapsed := self.elapsed_s) >= self.max_seconds:
            return f"time budget used up ({elapsed:.1f} s of {self.max_seconds:g} s)"
        return None

    def check(self) -> None:
        """Raise :class:`BudgetExceededError` when the budget is used up."""
        if (reason := self.exhausted()) is not None:
            raise BudgetExceededError(reason, hint="raise SafetyPolicy.max_steps / max_seconds for longer tasks")

    def __repr__(self) -> str:
        return (f"Budget(steps={self.steps}/{self.max_steps}, elapsed_s={self.elapsed_s:.1f}/"
                f"{self.max_seconds})")


# --------------------------------------------------------------------------------------------
# The policy
# --------------------------------------------------------------------------------------------

class SafetyPolicy(BaseModel):
    """What an agent may do. Serializable; holds no secrets (pass :class:`Secrets` separately).

    Attributes:
        allowed_domains: host patterns the browser may reach (see the module doc); empty = only the
            start URL's host (and its port when the URL names one).
        allow_file_urls: allow ``file://`` pages (off by default: they read the local disk).
        allow_downloads: save downloads (off by default: they are refused and the model told).
        max_steps: most actions per episode (``None`` = unlimited).
        max_seconds: most wall-clock seconds per episode (``None`` = unlimited).
        risky_actions: what needs the approval hook's yes before it runs (see :data:`RiskKind`).
            Default: typing a secret. Navigation outside the allowlist needs no approval: it is
            refused outright.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_domains: tuple[str, ...] = ()
    allow_file_urls: bool = False
    allow_downloads: bool = False
    max_steps: int | None = Field(50, ge=1)
    max_seconds: float | None = Field(1800.0, gt=0, allow_inf_nan=False)
    risky_actions: frozenset[RiskKind] = frozenset({"secret"})

    @field_validator("allowed_domains")
    @classmethod
    def _check_domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(HostPattern.parse(v)) for v in value)

    def url_guard(self, start_url: str) -> UrlGuard:
        """The allowlist for an episode that starts at ``start_url``.

        With an empty ``allowed_domains`` the start URL's host is the only one allowed (with its
        port when the URL names one); a start URL without a host (``file:``, ``data:``) then
        allows no host at all.
        """
        if self.allowed_domains:
            patterns = [HostPattern.parse(p) for p in self.allowed_domains]
        else:
            patterns = []
            try:
                parts = urlsplit(start_url.strip())
                host, port = parts.hostname, parts.port
            except ValueError:
                host, port = None, None
            if host and parts.scheme.lower() in _HOST_SCHEMES:
                patterns.append(HostPattern(host=_normalize_host(host), port=port))
        return UrlGuard(patterns, allow_file_urls=self.allow_file_urls)

    def budget(self, *, clock: Callable[[], float] = time.monotonic) -> Budget:
        """A fresh :class:`Budget` with this policy's limits, its clock started now."""
        return Budget(self.max_steps, self.max_seconds, clock=clock)

    def needs_approval(self, action: Action, secrets: Secrets | None = None) -> bool:
        """True if ``action`` must be approved (by the agent loop's approval hook) before it runs.

        Rules, each active when its kind is in ``risky_actions``:

        * an action tag (``"click"``, ``"goto"``...): every action of that type;
        * ``"secret"``: a Type whose text references ``{{secret:NAME}}`` or contains a secret's
          value verbatim (``secrets`` is needed for the latter);
        * ``"submit"``: a Type with ``submit=True``, or a KeyPress whose last key is Enter.

        ``zoom``, ``done`` and ``fail`` never need approval (they do not touch the page).
        """
        tag = getattr(action, "action", None)
        if tag in self.risky_actions:
            return True
        if isinstance(action, Type):
            if "secret" in self.risky_actions and (
                Secrets.references(action.text) or (secrets is not None and secrets.contains_value(action.text))
            ):
                return True
            if "submit" in self.risky_actions and action.submit:
                return True
        if isinstance(action, KeyPress) and "submit" in self.risky_actions:
            last = action.keys.replace(" ", "").split("+")[-1].lower()
            if last in {"enter", "numpadenter"}:
                return True
        return False
