"""Edges of giraffe_agent.safety: every scheme's default port, every host spelling, the port range, the
guards (a URL without a host, the budget's limits) and the immutability of what the policy decided.

Table-driven: each table holds the allowed rows next to the refused ones, so a guard that stopped
working (or that refused everything) fails a row. No browser, no network.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from pydantic import ValidationError

from giraffe_agent.safety import (
    BLOCKED_NOT_ALLOWED,
    Budget,
    BudgetExceededError,
    HostPattern,
    SafetyPolicy,
    UrlGuard,
)


def guard(*patterns: str, allow_file_urls: bool = False) -> UrlGuard:
    return UrlGuard([HostPattern.parse(p) for p in patterns], allow_file_urls=allow_file_urls)


# ------------------------------------------------------------------------------ default ports

#: every scheme checked against hosts, and the port a URL without one has
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@pytest.mark.parametrize("scheme,port", sorted(DEFAULT_PORTS.items()))
def test_a_url_without_a_port_has_its_schemes_default_port(scheme, port):
    other = 443 if port == 80 else 80
    assert guard(f"site.test:{port}").check(f"{scheme}://site.test/path") is None
    assert guard(f"site.test:{other}").check(f"{scheme}://site.test/path") == BLOCKED_NOT_ALLOWED
    # an explicit port wins over the default, both ways
    assert guard(f"site.test:{other}").check(f"{scheme}://site.test:{other}/") is None
    assert guard(f"site.test:{port}").check(f"{scheme}://site.test:{other}/") == BLOCKED_NOT_ALLOWED
    # the scheme is matched case-insensitively, as browsers do
    assert guard(f"site.test:{port}").check(f"{scheme.upper()}://site.test/") is None


@pytest.mark.parametrize("scheme,port", sorted(DEFAULT_PORTS.items()))
def test_the_start_urls_port_is_kept_only_when_it_names_one(scheme, port):
    policy = SafetyPolicy()
    named = policy.url_guard(f"{scheme}://site.test:8123/")
    assert named.check(f"{scheme}://site.test:8123/x") is None
    assert named.check(f"{scheme}://site.test/x") == BLOCKED_NOT_ALLOWED  # the default port is another port
    bare = policy.url_guard(f"{scheme}://site.test/")
    assert bare.check("http://site.test:9/") is None and bare.check("https://site.test:65535/") is None
    assert bare.check(f"{scheme}://other.test/") == BLOCKED_NOT_ALLOWED


@pytest.mark.parametrize("scheme", sorted(DEFAULT_PORTS))
def test_port_zero_is_not_the_default_port(scheme):
    allowed = guard(f"site.test:{DEFAULT_PORTS[scheme]}")
    assert allowed.check(f"{scheme}://site.test/") is None  # control: the default port is allowed
    assert allowed.check(f"{scheme}://site.test:0/") == "malformed URL"


# ------------------------------------------------------------------------------ host spellings

#: (how a URL writes the host, allowed by the pattern "example.com" / "[::1]" / "bücher.example")
HOST_SPELLINGS = [
    ("http://example.com/", True),
    ("http://EXAMPLE.COM/", True),
    ("http://Example.Com./", True),  # a trailing dot is the same host
    ("http://example.com.:80/", True),
    ("http://user:pw@example.com/", True),  # userinfo is not the host
    ("http://example.com@evil.test/", False),  # ... and cannot smuggle one in
    ("http://evil.test/?example.com", False),
    ("http://example.com.evil.test/", False),
    ("http://www.example.com/", False),
    ("http://example.co/", False),
    ("http://[::1]/", True),
    ("http://[::1]:8080/", True),
    ("http://[::2]/", False),
    ("http://xn--bcher-kva.example/", True),  # IDNA (punycode) form of bücher.example
    ("http://bücher.example/", True),
    ("http://BÜCHER.example./", True),
    ("http://bucher.example/", False),
]


@pytest.mark.parametrize("url,allowed", HOST_SPELLINGS)
def test_host_spellings_in_urls(url, allowed):
    verdict = guard("example.com", "[::1]", "bücher.example").check(url)
    assert verdict == (None if allowed else BLOCKED_NOT_ALLOWED)


#: (host as a proxy's CONNECT line or a pattern writes it, its normal form)
HOST_FORMS = [
    ("example.com", "example.com"),
    ("EXAMPLE.com", "example.com"),
    ("example.com.", "example.com"),
    (" Example.COM. ", "example.com"),
    ("[::1]", "::1"),
    ("[FE80::1]", "fe80::1"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("BÜCHER.EXAMPLE.", "xn--bcher-kva.example"),
]


@pytest.mark.parametrize("written,normal", HOST_FORMS)
def test_check_host_normalises_what_it_is_given(written, normal):
    ipv6 = ":" in normal
    assert guard(f"[{normal}]" if ipv6 else normal).check_host(written, 443) is None
    assert guard("[::2]" if ipv6 else f"*.{normal}").check_host(written, 443) == BLOCKED_NOT_ALLOWED


@pytest.mark.parametrize("written,normal", [w for w in HOST_FORMS if not w[0].startswith("[")])
def test_patterns_are_normalised_like_hosts(written, normal):
    pattern = HostPattern.parse(written)
    assert pattern.host == normal and pattern.port is None and not pattern.subdomains
    assert pattern.matches(normal, 1) and not pattern.matches("x" + normal, 1)
    wildcard = HostPattern.parse(f"*.{written.strip()}:8000")
    assert (wildcard.host, wildcard.port, wildcard.subdomains) == (normal, 8000, True)
    assert wildcard.matches(f"a.{normal}", 8000) and not wildcard.matches(normal, 8000)


@pytest.mark.parametrize("pattern", ["[::1]", "[::1]:8000", "[FE80::1]:443", "*.example.com:8443", "example.com",
                                     "*", "127.0.0.1:8000", "xn--bcher-kva.example"])
def test_a_pattern_reads_back_from_its_text(pattern):
    parsed = HostPattern.parse(pattern)
    assert HostPattern.parse(str(parsed)) == parsed
    assert str(parsed) == pattern.lower()


@pytest.mark.parametrize("written", ["[0:0:0:0:0:0:0:1]", "[::0:1]", "[0000::0001]"])
def test_ipv6_literals_are_compared_as_addresses(written):
    assert guard("[::1]").check_host("::1", 80) is None  # control: the canonical spelling
    assert guard("[::1]").check(f"http://{written}/") is None
    assert guard(written).check_host("[::1]", 80) is None


# ------------------------------------------------------------------------------ port range


@pytest.mark.parametrize("port,valid", [("1", True), ("80", True), ("65535", True), ("0", False), ("65536", False),
                                        ("99999", False), ("-1", False), ("+80", False), ("", False), (" 80", False),
                                        ("8o", False)])
def test_pattern_ports_are_1_to_65535(port, valid):
    for host in ("example.com", "[::1]", "*.example.com"):
        if valid:
            assert HostPattern.parse(f"{host}:{port}").port == int(port)
        else:
            with pytest.raises(ValueError, match="bad port"):
                HostPattern.parse(f"{host}:{port}")
            with pytest.raises(ValidationError):
                SafetyPolicy(allowed_domains=[f"{host}:{port}"])


@pytest.mark.parametrize("port", ["\u00b2", "\uff18\uff10", "\u0668\u0660"], ids=["superscript-2", "fullwidth-80",
                                                                           "arabic-indic-80"])
def test_pattern_ports_are_ascii_digits(port):
    with pytest.raises(ValueError, match="bad port"):
        HostPattern.parse(f"example.com:{port}")


@pytest.mark.parametrize("url,verdict", [
    ("http://site.test:65535/", None),
    ("http://site.test:1/", None),
    ("http://site.test:65536/", "malformed URL"),
    ("http://site.test:-1/", "malformed URL"),
    ("http://site.test:8o/", "malformed URL"),
    ("http://[::1/", "malformed URL"),
])
def test_url_ports_out_of_range_are_malformed(url, verdict):
    allowed = guard("site.test", "[::1]")
    assert allowed.check(url) == verdict


# ------------------------------------------------------------------------------ guards


@pytest.mark.parametrize("url", ["http:///path", "https://", "ws://:80/", "wss://@/", "http://user@/",
                                 "HTTPS:///x"])
def test_a_url_without_a_host_is_refused_with_a_reason(url):
    assert guard("*").check(url) == "URL without a host"  # even when every host is allowed
    assert guard("*").check(url.replace("://", "://site.test", 1).replace("@", "")) is None  # control


@pytest.mark.parametrize("url,verdict", [
    ("", "URL without a scheme"),
    ("   ", "URL without a scheme"),
    ("example.com/x", "URL without a scheme"),
    ("//example.com/x", "URL without a scheme"),
    ("about:blank", None),
    ("ABOUT:BLANK", None),
    ("about:blank#top", None),
    ("about:srcdoc", None),
    ("about:version", "about: pages are not allowed"),
    ("about:blankx", "about: pages are not allowed"),
    ("data:text/html,<p>", None),
    ("DATA:,x", None),
    ("blob:http://evil.test/uuid", None),
    ("file:///etc/passwd", "file:// URLs are not allowed"),
    ("javascript:alert(1)", "javascript: URLs are not allowed"),
    ("ftp://example.com/", "ftp: URLs are not allowed"),
    ("chrome://settings", "chrome: URLs are not allowed"),
])
def test_every_scheme_has_its_verdict(url, verdict):
    assert guard("example.com").check(url) == verdict
    assert guard("example.com").allows(url) is (verdict is None)


def test_file_urls_follow_the_switch():
    assert guard("example.com", allow_file_urls=True).check("file:///tmp/page.html") is None
    assert guard("example.com").check("file:///tmp/page.html") == "file:// URLs are not allowed"
    assert SafetyPolicy(allow_file_urls=True).url_guard("http://a.test/").allows("file:///tmp/x")
    assert not SafetyPolicy().url_guard("http://a.test/").allows("file:///tmp/x")


@pytest.mark.parametrize("start", ["file:///tmp/x.html", "data:text/html,hi", "about:blank", "ftp://site.test/",
                                   "http://site.test:99999/", "http:///nohost", "not a url"])
def test_a_start_url_without_a_usable_host_allows_no_host(start):
    empty = SafetyPolicy().url_guard(start)
    assert empty.patterns == () and empty.describe() == "(none)"
    for url in ("http://site.test/", "http://127.0.0.1/", "https://localhost/"):
        assert empty.check(url) == BLOCKED_NOT_ALLOWED


@pytest.mark.parametrize("start,pattern", [
    ("http://Site.Test./", "site.test"),
    ("HTTPS://SITE.TEST:8443/x", "site.test:8443"),
    ("ws://[::1]:9000/", "[::1]:9000"),
    ("http://bücher.example/", "xn--bcher-kva.example"),
])
def test_the_start_urls_host_is_normalised(start, pattern):
    assert SafetyPolicy().url_guard(start).describe() == pattern


def test_an_explicit_allowlist_ignores_the_start_url():
    listed = SafetyPolicy(allowed_domains=["a.test"]).url_guard("http://b.test/")
    assert listed.check("http://a.test/") is None
    assert listed.check("http://b.test/") == BLOCKED_NOT_ALLOWED
    assert listed.describe() == "a.test"


def test_a_subdomain_pattern_does_not_match_look_alikes():
    pattern = HostPattern.parse("*.example.com")
    assert pattern.matches("a.example.com", 1) and pattern.matches("a.b.example.com", 1)
    for host in ("example.com", "evilexample.com", "example.com.evil", "aexample.com", ""):
        assert not pattern.matches(host, 1), host


def test_any_host_matches_every_host_and_port():
    pattern = HostPattern.parse("*")
    assert pattern.any_host and str(pattern) == "*"
    assert all(pattern.matches(host, port) for host in ("a", "::1", "") for port in (1, 65535))


# ------------------------------------------------------------------------------ budget guards


@pytest.mark.parametrize("max_steps", [0, -1, -100])
def test_a_budget_of_no_steps_is_refused(max_steps):
    with pytest.raises(ValueError, match="max_steps"):
        Budget(max_steps=max_steps)
    with pytest.raises(ValidationError):
        SafetyPolicy(max_steps=max_steps)
    assert Budget(max_steps=1).remaining_steps == 1  # control: the smallest budget


@pytest.mark.parametrize("max_seconds", [0, 0.0, -0.0, -1, float("nan"), float("-inf")])
def test_a_budget_of_no_time_is_refused(max_seconds):
    with pytest.raises(ValueError, match="max_seconds"):
        Budget(max_seconds=max_seconds)
    with pytest.raises(ValidationError):
        SafetyPolicy(max_seconds=max_seconds)
    assert Budget(max_seconds=1e-9).remaining_s == pytest.approx(1e-9, abs=1e-9)  # control: the smallest


def test_the_budget_is_used_up_exactly_at_its_limits():
    now = [0.0]
    budget = Budget(max_steps=2, max_seconds=5.0, clock=lambda: now[0])
    budget.record_step()
    now[0] = 4.999
    assert budget.exhausted() is None and budget.remaining_steps == 1
    assert budget.remaining_s == pytest.approx(0.001)
    now[0] = 5.0
    assert budget.exhausted() == "time budget used up (5.0 s of 5 s)"
    now[0] = 1.0
    budget.record_step()
    assert budget.exhausted() == "step budget used up (2 of 2 steps)"  # the step limit is reported first
    budget.record_step()
    now[0] = 99.0
    assert budget.remaining_steps == 0 and budget.remaining_s == 0.0  # never negative
    with pytest.raises(BudgetExceededError) as caught:
        budget.check()
    assert caught.value.code == "budget-exceeded" and caught.value.hint


def test_restart_zeroes_the_steps_and_restarts_the_clock():
    now = [10.0]
    budget = Budget(max_steps=1, max_seconds=2.0, clock=lambda: now[0])
    budget.record_step()
    now[0] = 13.0
    assert budget.exhausted() is not None
    budget.restart()
    assert budget.steps == 0 and budget.elapsed_s == 0.0 and budget.exhausted() is None
    now[0] = 14.5
    assert budget.elapsed_s == 1.5 and budget.remaining_s == 0.5
    assert repr(budget) == "Budget(steps=0/1, elapsed_s=1.5/2.0)"


def test_the_policys_budget_takes_its_limits():
    now = [0.0]
    budget = SafetyPolicy(max_steps=7, max_seconds=30).budget(clock=lambda: now[0])
    assert (budget.max_steps, budget.max_seconds, budget.remaining_steps, budget.remaining_s) == (7, 30, 7, 30)
    unlimited = SafetyPolicy(max_steps=None, max_seconds=None).budget(clock=lambda: now[0])
    for _ in range(1000):
        unlimited.record_step()
    now[0] = 1e9
    assert unlimited.exhausted() is None and unlimited.remaining_s is None


# ------------------------------------------------------------------------------ defaults and immutability


def test_the_default_policy_is_closed():
    policy = SafetyPolicy()
    assert policy.allowed_domains == ()
    assert policy.allow_file_urls is False and policy.allow_downloads is False
    assert policy.max_steps == 50 and policy.max_seconds == 1800.0
    assert policy.risky_actions == frozenset({"secret"})


@pytest.mark.parametrize("field,value", [
    ("allowed_domains", ("*",)),
    ("allow_file_urls", True),
    ("allow_downloads", True),
    ("max_steps", None),
    ("max_seconds", None),
    ("risky_actions", frozenset()),
])
def test_a_policy_cannot_be_changed_after_it_is_made(field, value):
    policy = SafetyPolicy(allowed_domains=["a.test"])
    with pytest.raises(ValidationError):
        setattr(policy, field, value)
    assert policy == SafetyPolicy(allowed_domains=["a.test"])
    assert policy.url_guard("http://a.test/").check("http://evil.test/") == BLOCKED_NOT_ALLOWED
    assert policy.model_copy(update={field: value}) != policy  # control: a changed copy is a new policy


def test_what_a_policy_holds_is_immutable_too():
    policy = SafetyPolicy(allowed_domains=["a.test"], risky_actions={"goto"})
    assert isinstance(policy.allowed_domains, tuple) and isinstance(policy.risky_actions, frozenset)
    assert hash(policy) == hash(SafetyPolicy(allowed_domains=["a.test"], risky_actions={"goto"}))
    pattern = HostPattern.parse("a.test:80")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pattern.host = "evil.test"  # type: ignore[misc]
    guard_ = policy.url_guard("http://a.test/")
    assert isinstance(guard_.patterns, tuple)


@pytest.mark.parametrize("field,value", [("max_steps", 0), ("max_seconds", 0), ("max_seconds", math.inf),
                                         ("max_seconds", math.nan), ("allowed_domains", ["a.test/x"]),
                                         ("risky_actions", {"everything"}), ("allow_downloads", "maybe")])
def test_a_policy_with_a_bad_value_is_refused(field, value):
    with pytest.raises(ValidationError):
        SafetyPolicy(**{field: value})


@pytest.mark.parametrize("pattern,problem", [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("https://example.com", "without scheme or path"),
    ("example.com/x", "without scheme or path"),
    ("[::1", "unclosed '['"),
    ("[::1]8000", "expected ':port' after ']'"),
    ("::1", "write IPv6 hosts in brackets"),
    ("ex*ample.com", "'*' is only allowed"),
    ("*.", "'*' is only allowed"),
    ("[]", "'*' is only allowed"),  # an empty host
])
def test_each_bad_pattern_says_what_is_wrong(pattern, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        HostPattern.parse(pattern)


def test_the_smallest_limits_a_policy_takes():
    policy = SafetyPolicy(max_steps=1, max_seconds=0.5)
    assert (policy.max_steps, policy.max_seconds) == (1, 0.5)


def test_error_codes_and_descriptions():
    from giraffe_agent.safety import SafetyError

    assert SafetyError("x").code == "safety-error" and BudgetExceededError("x").code == "budget-exceeded"
    assert guard("a.test", "*.b.test:8080", "[::1]:9").describe() == "a.test, *.b.test:8080, [::1]:9"
    assert UrlGuard([]).allow_file_urls is False and UrlGuard([]).check("file:///x") == "file:// URLs are not allowed"
    assert guard("[::1]").check_host("[::1", 80) == BLOCKED_NOT_ALLOWED  # an unclosed bracket is no IPv6 host
    assert guard("[::1]").check_host("::1]", 80) == BLOCKED_NOT_ALLOWED


@pytest.mark.parametrize("keys,submits", [("Enter", True), ("enter", True), ("Control + Enter", True),
                                          ("NumpadEnter", True), ("Shift+numpadenter", True), ("Tab", False),
                                          ("Enter+a", False), ("Control+E", False)])
def test_a_key_press_submits_when_its_last_key_is_enter(keys, submits):
    from giraffe_agent.actions import KeyPress

    assert SafetyPolicy(risky_actions={"submit"}).needs_approval(KeyPress(keys=keys)) is submits
    assert SafetyPolicy().needs_approval(KeyPress(keys=keys)) is False  # control: "submit" not listed
