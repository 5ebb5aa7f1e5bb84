"""Redaction of secrets in every encoding (:class:`giraffe_agent.safety.Secrets`), no browser.

The attack: a secret reaches a string the SDK records or sends in a form other than its raw value
(form-encoded, percent-encoded in lower case, JSON- or HTML-escaped, encoded twice, cut short by a
shortener). References: the standard library's own encoders (``urllib.parse.quote``/
``quote_plus``, ``json.dumps``, ``html.escape``, ``repr``) and the WHATWG
``application/x-www-form-urlencoded`` serializer written out below, never the code under test.
The control is the redactor as it was (value, ``quote`` and ``quote_plus`` only): every attack
below gets through it.
"""

from __future__ import annotations

import html
import json
import random
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from giraffe_agent.redaction import MIN_PREFIX
from giraffe_agent.safety import SecretError, Secrets

#: the secret of the brief: URL-reserved characters, quotes, a newline and non-ASCII text
SECRET = "p~ss w+rd&%\"'\nçé日本"


# ------------------------------------------------------------------------------ reference encoders

def whatwg_form(text: str) -> str:
    """The WHATWG urlencoded serializer: ``*-._`` and ASCII alphanumerics kept, space as ``+``."""
    out = []
    for byte in text.encode("utf-8"):
        c = chr(byte)
        out.append(c if c.isascii() and (c.isalnum() or c in "*-._") else "+" if c == " " else f"%{byte:02X}")
    return "".join(out)


def url_query(text: str) -> str:
    """What a URL parser leaves of a raw value in a query: tab and newlines removed, only
    space, ``"#<>'`` and non-ASCII percent-encoded (``%`` itself stays)."""
    text = re.sub(r"[\t\n\r]", "", text)
    return quote(text, safe="!$%&()*+,-./:;=?@[\\]^_`{|}~")


def js_escape(text: str) -> str:
    """JavaScript's legacy ``escape()``: ``@*_+-./`` and ASCII alphanumerics kept, other UTF-16
    code units below 256 as ``%XX``, the rest as ``%uXXXX``."""
    out = []
    for unit in memoryview(text.encode("utf-16-be")).cast("H"):
        code = int.from_bytes(unit.to_bytes(2, "little"), "big")
        c = chr(code)
        out.append(c if c.isascii() and (c.isalnum() or c in "@*_+-./") else
                   f"%{code:02X}" if code < 256 else f"%u{code:04X}")
    return "".join(out)


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def json_inner(text: str, ascii_only: bool = True) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]


#: how pages, URLs and servers carry a value (one layer)
PAGE_ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "quote": lambda s: quote(s, safe=""),
    "quote-path": quote,
    "quote_plus": quote_plus,
    "whatwg-form": whatwg_form,
    "whatwg-form-lower": lambda s: lower_hex(whatwg_form(s)),
    "encodeURIComponent": lambda s: quote(s, safe="-_.!~*'()"),
    "encodeURIComponent-lower": lambda s: lower_hex(quote(s, safe="-_.!~*'()")),
    "url-query": url_query,
    "js-escape": js_escape,
    "json-ascii": json_inner,
    "json-utf8": lambda s: json_inner(s, ascii_only=False),
    "json-slash": lambda s: json_inner(s).replace("/", "\\/"),
    "html": html.escape,
    "html-numeric": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "html-hex": lambda s: "".join(f"&#x{ord(c):x};" for c in s),
    "python-repr": lambda s: repr(s)[1:-1],
}
#: how the SDK itself writes a string (JSON files, the HTML report, URLs)
SDK_ENCODINGS: dict[str, Callable[[str], str]] = {
    "as-is": lambda s: s,
    "json-ascii": json_inner,
    "json-utf8": lambda s: json_inner(s, ascii_only=False),
    "html": html.escape,
    "html(json-ascii)": lambda s: html.escape(json_inner(s)),
    "quote": lambda s: quote(s, safe=""),
}
#: what a page does to the value: a text input drops a newline, a form post sends CRLF, a title
#: collapses it into a space, a normalizing page decomposes accents
VALUE_VARIANTS: dict[str, Callable[[str], str]] = {
    "as-typed": lambda s: s,
    "crlf": lambda s: re.sub(r"\r?\n", "\r\n", s),
    "no-newline": lambda s: s.replace("\n", ""),
    "collapsed": lambda s: re.sub(r"\s+", " ", s),
    "nfd": lambda s: unicodedata.normalize("NFD", s),
}


def forms(secret: str) -> dict[str, str]:
    """Every encoding of ``secret`` above: value variant x page encoding x SDK encoding."""
    out = {}
    for wname, wfun in VALUE_VARIANTS.items():
        for pname, pfun in PAGE_ENCODINGS.items():
            for sname, sfun in SDK_ENCODINGS.items():
                out[f"{wname}/{pname}/{sname}"] = sfun(pfun(wfun(secret)))
    return out


POOL = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
        "     \n\tçéüß日本語€😀")


def random_secrets(count: int, seed: int = 0) -> list[str]:
    """``count`` secrets of 8 to 24 characters from :data:`POOL`, starting and ending with a
    character other than whitespace."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        text = "".join(rng.choice(POOL) for _ in range(rng.randint(8, 24)))
        if not text[0].isspace() and not text[-1].isspace():
            out.append(text)
    return out


def legacy_redact(secret: str, text: str) -> str:
    """The redactor as it was at commit 03b9981: the value, ``quote(safe="")`` and ``quote_plus``."""
    for form in sorted({secret, quote(secret, safe=""), quote_plus(secret)}, key=len, reverse=True):
        text = text.replace(form, "{{secret:PW}}")
    return text


def prefix_chars(secret: str) -> int:
    """How many characters of ``secret`` make its first :data:`MIN_PREFIX` units (a whitespace run
    is one unit)."""
    units, i = 0, 0
    while i < len(secret) and units < MIN_PREFIX:
        if secret[i].isspace():
            while i < len(secret) and secret[i].isspace():
                i += 1
        else:
            i += 1
        units += 1
    return i


# ------------------------------------------------------------------------------ the attacks


def test_the_secret_of_the_brief_is_redacted_in_every_encoding_and_the_old_redactor_missed_them():
    secrets = Secrets(PW=SECRET)
    leaked_before = []
    for name, form in forms(SECRET).items():
        text = f"title: [{form}] end"
        out = secrets.redact(text)
        assert form not in out and "{{secret:PW}}" in out, (name, form, out)
        assert secrets.contains_value(text), name
        if form in legacy_redact(SECRET, text):
            leaked_before.append(name)
    # the control: only the raw value, quote and quote_plus were caught, everything else leaked
    caught = {form for name, form in forms(SECRET).items() if name not in leaked_before}
    assert caught <= {SECRET, quote(SECRET, safe=""), quote_plus(SECRET)}
    for name in ("as-typed/whatwg-form/as-is", "as-typed/json-ascii/as-is", "as-typed/html/as-is",
                 "as-typed/quote/quote", "crlf/whatwg-form-lower/as-is", "no-newline/raw/as-is"):
        assert name in leaked_before, name


@pytest.mark.parametrize("seed", range(4))
def test_random_secrets_are_redacted_in_every_encoding(seed):
    for secret in random_secrets(25, seed):
        secrets = Secrets(PW=secret)
        for name, form in forms(secret).items():
            out = secrets.redact(f"<p>{form}</p>")
            assert form not in out, (secret, name, form, out)


def test_every_line_of_a_secret_is_redacted_on_its_own():
    secrets = Secrets(PW="first line\nsecond-line\nab")
    assert secrets.redact("user typed 'first line' then Enter") == "user typed '{{secret:PW}}' then Enter"
    assert secrets.redact("second-line") == "{{secret:PW}}"
    assert secrets.redact("ab") == "ab"  # a line under MIN_PREFIX characters is not a secret on its own
    assert legacy_redact("first line\nsecond-line\nab", "first line") == "first line"  # the control


@pytest.mark.parametrize("secret", [SECRET, *random_secrets(12, seed=7)])
def test_a_secret_cut_short_before_an_ellipsis_is_redacted_at_every_cut(secret):
    """``short()``-style shorteners (``text[:n - 3] + "..."``) leave a prefix; it is redacted from
    MIN_PREFIX units on, also when the cut splits an escape."""
    secrets = Secrets(PW=secret)
    for name in ("raw", "whatwg-form", "quote", "json-ascii", "html", "url-query", "python-repr"):
        encode = PAGE_ENCODINGS[name]
        form = encode(secret)
        shortest = len(encode(secret[:prefix_chars(secret)]))
        for cut in range(shortest, len(form)):
            for mark in ("...", "\u2026"):
                text = f"opened http://127.0.0.1/?q={form[:cut]}{mark} (HTTP 404)"
                out = secrets.redact(text)
                assert form[:cut] not in out, (name, cut, out)
                assert legacy_redact(secret, text) == text  # the control: the old redactor missed every cut


def test_shorten_redacts_before_it_cuts_and_never_ends_on_a_prefix():
    secrets = Secrets(PW=SECRET)
    message = "typed " + json.dumps(SECRET) + " into the field"
    for limit in range(8, len(message) + 5):
        out = secrets.shorten(message, limit)
        assert len(out) <= limit + len("{{secret:PW}}")
        for k in range(prefix_chars(SECRET), len(SECRET) + 1):
            assert json_inner(SECRET[:k]) not in out and SECRET[:k] not in out, (limit, out)
    # the control: cutting first, then redacting, leaks the prefix
    cut_first = legacy_redact(SECRET, message[:20] + "...")
    assert json_inner(SECRET)[:10] in cut_first
    # the first characters of a secret (not the whole: redaction would have caught it) right at
    # the cut become the placeholder, with or without an ellipsis
    partial = "abcdef" + SECRET[:6] + "XYZXYZ"
    assert secrets.redact(partial) == partial
    assert secrets.shorten(partial, 12, ellipsis="") == "abcdef{{secret:PW}}"
    assert secrets.shorten(partial, 15) == "abcdef{{secret:PW}}..."
    assert Secrets(PW="zzzzzz").shorten("abc" * 100, 10) == "abcabca..."


def test_redaction_is_idempotent_and_keeps_placeholders():
    secrets = Secrets(PW=SECRET, USER="secret")
    text = f"{{{{secret:PW}}}} {{{{secret:USER}}}} {json.dumps(SECRET)} secret"
    once = secrets.redact(text)
    assert once == "{{secret:PW}} {{secret:USER}} \"{{secret:PW}}\" {{secret:USER}}"
    assert secrets.redact(once) == once


def test_overlapping_secrets_prefer_the_longest_and_find_reports_spans():
    secrets = Secrets(SHORT="abcd", LONG="abcdefgh")
    assert secrets.redact("abcdefgh abcd abcdef...") == "{{secret:LONG}} {{secret:SHORT}} {{secret:LONG}}..."
    assert list(secrets.find("xx abcd")) == [(3, 7, "SHORT")]


def test_a_long_secret_is_redacted_whole_and_cut():
    rng = random.Random(3)
    pem = "-----BEGIN KEY-----\n" + "\n".join("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/")
                                                     for _ in range(64)) for _ in range(25)) + "\n-----END KEY-----"
    secrets = Secrets(KEY=pem)
    for text in (pem, json_inner(pem), quote_plus(pem), html.escape(json_inner(pem))):
        assert secrets.redact(f"a {text} b") == "a {{secret:KEY}} b"
    cut = json_inner(pem)[:900] + "..."
    assert secrets.redact(cut) == "{{secret:KEY}}..."


def test_secret_values_must_have_a_visible_character():
    with pytest.raises(SecretError, match="other than whitespace"):
        Secrets(BLANK=" \n ")
    assert Secrets(PW="  padded  ").redact("x padded y") == "x {{secret:PW}} y"
