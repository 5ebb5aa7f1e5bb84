"""Secrets and their redaction: a value is found in every encoding it takes on its way through
pages, URLs, JSON and HTML, whole, line by line, and cut short, and replaced by its name.

A model writes ``{{secret:NAME}}``; the environment fills the value in only at the moment it types
(:meth:`Secrets.fill`), and :meth:`Secrets.redact` replaces the value, wherever it appears, by that
placeholder in everything the SDK logs, records, shows or sends to a model.

How a value is found: the text is searched as it is and in up to :data:`MAX_LAYERS` decoded views
of it, each view decoding every escape of the previous one (so mixtures and escapes of escapes
are found too); a match in a view redacts the characters of the original text it came from.
The escapes decoded (hexadecimal digits in either case):

* percent-encoding: UTF-8 (``quote``, ``quote_plus``, ``encodeURIComponent``, the WHATWG
  ``application/x-www-form-urlencoded`` serializer, a URL's own minimal encoding), Latin-1
  (``%E9``) and JavaScript's ``escape()`` (``%u65E5``);
* backslash escapes of JSON, JavaScript and Python: ``\\"``, ``\\'``, ``\\\\``, ``\\/``,
  ``\\n`` and the other one-letter escapes, ``\\u00e9``, surrogate pairs, ``\\xe9``,
  ``\\U0001f600``, ``\\u{1f600}``;
* HTML character references: every HTML5 name (``&quot;``, ``&amp;``, ``&eacute;``...), decimal
  and hexadecimal (``&#39;``, ``&#x27;``), with or without the ``;``.

What matches a value:

* its characters in order (the value as given, and its NFC, NFD and NFKC normal forms), where
  a run of whitespace in the value matches any run of whitespace or ``+`` (a form's space), or
  nothing (a text input drops a newline, a title collapses it into a space, a form post sends
  ``%0D%0A``); whitespace at either end of the value is not part of what is matched;
* every line of a value of several lines on its own, when it has :data:`MIN_PREFIX` characters or
  more (typing a newline into a single-line field may submit only the first line);
* a cut-short value: its first :data:`MIN_PREFIX` units or more (a whitespace run is one unit),
  and a partly cut escape, followed by ``...`` or ``…`` (the marks shorteners append), with or
  without whitespace between.
  :meth:`Secrets.shorten` redacts BEFORE it cuts and treats its own cut point the same way.

An existing placeholder of a known name is left alone, so redacting twice changes nothing.
"""

from __future__ import annotations

import bisect
import html
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from giraffe_core.errors import GiraffeError

__all__ = ["SecretError", "Secrets"]

T = TypeVar("T")

#: a cut-short secret is redacted from this many units on (or the whole value when shorter)
MIN_PREFIX = 4
#: how many times the text is decoded (escapes of escapes of escapes...)
MAX_LAYERS = 4
#: what shorteners append at a cut; a secret's prefix right before one of them is redacted
ELLIPSES = ("...", "\u2026")

_SECRET_REF = re.compile(r"\{\{\s*secret:([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ESCAPE = re.compile(
    r"(?P<pct>(?:%[0-9A-Fa-f]{2})+)|%u(?P<pcu>[0-9A-Fa-f]{4})"
    r"|\\(?P<bsl>u\{[0-9A-Fa-f]{1,6}\}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|x[0-9A-Fa-f]{2}|[\"'\\/bfnrtv0])"
    r"|(?P<amp>&(?:#[0-9]{1,8};?|#[xX][0-9A-Fa-f]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};?))")
_ONE_LETTER = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
               "v": "\v", "0": "\0"}
#: an escape cut in the middle, at the end of what precedes a cut mark
_PARTIAL_END = re.compile(r"(?:(?:%[0-9A-Fa-f]{2})*%[0-9A-Fa-f]?|(?:\\u[dD][89abAB][0-9A-Fa-f]{2})?\\"
                          r"(?:u\{?[0-9A-Fa-f]{0,5}|U[0-9A-Fa-f]{0,7}|x[0-9A-Fa-f]?)?|&#?[xX]?[0-9A-Za-z]{0,31}"
                          r"|[\ud800-\udbff])\Z")
_TRAILING_SPACE = re.compile(r"\s+\Z")
_CUT_MARK = re.compile("|".join(re.escape(e) for e in ELLIPSES))
_WHITESPACE = re.compile(r"[\s+]*")


class SecretError(GiraffeError, LookupError):
    """A secret is unknown or malformed. Messages name secrets, never their values."""

    code = "secret-error"


# --------------------------------------------------------------------------------------------
# decoded views of a text
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _View:
    """``text``, decoded once from ``parent`` (``None``: the original text). Segment ``i`` starts
    at ``starts[i]`` of ``text`` and comes from ``[sources[i][0], sources[i][1])`` of the parent:
    character by character when ``literal[i]``, else as a whole (an escape)."""

    text: str
    parent: _View | None = None
    starts: tuple[int, ...] = ()
    sources: tuple[tuple[int, int], ...] = ()
    literal: tuple[bool, ...] = ()

    def _to_parent(self, pos: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, pos) - 1
        start, end = self.sources[i]
        if self.literal[i]:
            start += pos - self.starts[i]
            return start, start + 1
        return start, end

    def origin(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that the characters ``[start, end)`` of this view come from."""
        view = self
        while view.parent is not None:
            start, end = view._to_parent(start)[0], view._to_parent(end - 1)[1]
            view = view.parent
        return start, end


def _percent_chars(token: str) -> list[tuple[str, int, int]]:
    """The characters of a run of ``%XX`` (UTF-8, else Latin-1 byte by byte; the bytes of a UTF-8
    sequence cut short at the end of the run as one piece), each with its span in ``token``."""
    data = bytes.fromhex(token.replace("%", ""))
    out, i = [], 0
    while i < len(data):
        lead = data[i]
        n = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF8 else 1
        try:
            char = data[i:i + n].decode("utf-8")
        except UnicodeDecodeError:  # Latin-1; a UTF-8 sequence cut at the end stays one segment
            n = n if i + n > len(data) else 1
            char = data[i:i + n].decode("latin-1")
        out.append((char, 3 * i, 3 * (i + n)))
        i += n
    return out


def _escape_chars(match: re.Match[str]) -> list[tuple[str, int, int]] | None:
    """What the escape ``match`` stands for, as characters with their spans in it; ``None`` when it
    is not an escape after all (an unknown entity, a code point out of range)."""
    kind = match.lastgroup
    token = match.group(0)
    if kind == "pct":
        return _percent_chars(token)
    if kind == "amp":
        text = html.unescape(token)
        return None if text == token else [(text, 0, len(token))]
    body = match.group("bsl") or "u" + match.group("pcu")
    if body in _ONE_LETTER:
        return [(_ONE_LETTER[body], 0, len(token))]
    code = int(body.strip("uUx{}"), 16)
    return [(chr(code), 0, len(token))] if code <= 0x10FFFF else None


def _decode(view: _View) -> _View | None:
    """``view`` with every escape decoded once; ``None`` when it has none."""
    text, pieces, starts, sources, literal = view.text, [], [], [], []
    pos = out = 0
    for match in _ESCAPE.finditer(text):
        chars = _escape_chars(match)
        if chars is None:
            continue
        if match.start() > pos:
            pieces.append(text[pos:match.start()])
            starts.append(out), sources.append((pos, match.start())), literal.append(True)
            out += match.start() - pos
        for char, rel_start, rel_end in chars:
            a, b = match.start() + rel_start, match.start() + rel_end
            previous = pieces[-1] if pieces and not literal[-1] else ""
            if len(char) == 1 and "\udc00" <= char <= "\udfff" and len(previous) == 1 and \
                    "\ud800" <= previous <= "\udbff" and sources[-1][1] == a:  # a surrogate pair
                pieces[-1] = (previous + char).encode("utf-16", "surrogatepass").decode("utf-16")
                sources[-1] = (sources[-1][0], b)
                continue
            pieces.append(char)
            starts.append(out), sources.append((a, b)), literal.append(False)
            out += len(char)
        pos = match.end()
    if not pieces:
        return None
    if pos < len(text):
        pieces.append(text[pos:])
        starts.append(out), sources.append((pos, len(text))), literal.append(True)
    return _View("".join(pieces), view, tuple(starts), tuple(sources), tuple(literal))


def _views(text: str) -> list[_View]:
    """``text`` and up to :data:`MAX_LAYERS` decodings of it, each of the previous one."""
    views = [_View(text)]
    while len(views) <= MAX_LAYERS and (decoded := _decode(views[-1])) is not None:
        views.append(decoded)
    return views


# --------------------------------------------------------------------------------------------
# what matches a value
# --------------------------------------------------------------------------------------------

def _units(value: str) -> tuple[str, ...]:
    """``value`` as units: single characters, and whitespace runs (kept whole), without the
    whitespace at either end."""
    units: list[str] = []
    for c in value.strip():
        if c.isspace() and units and units[-1].isspace():
            units[-1] += c
        else:
            units.append(c)
    return tuple(units)


def _pieces(value: str) -> list[tuple[str, ...]]:
    """What is matched of ``value``: its units and, for a value of several lines, the units of each
    line with :data:`MIN_PREFIX` characters or more."""
    pieces = [_units(value)]
    lines = re.split(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+", value.strip())
    if len(lines) > 1:
        pieces += [_units(line) for line in lines if sum(not c.isspace() for c in line) >= MIN_PREFIX]
    return pieces


def _piece_regex(units: tuple[str, ...]) -> str:
    return "".join(_WHITESPACE.pattern if u.isspace() else re.escape(u) for u in units)


@dataclass(frozen=True)
class _Piece:
    """What is matched of one secret: its ``name``, its ``units``, and for a cut, which numbers of
    first units can end in a given character (``ends[" "]``: in a whitespace run, which matches
    whitespace, ``+`` or nothing), longest first."""

    name: str
    units: tuple[str, ...]
    ends: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, name: str, units: tuple[str, ...]) -> _Piece:
        ends: dict[str, list[int]] = {}
        for k in range(len(units), MIN_PREFIX - 1, -1):
            ends.setdefault(" " if units[k - 1].isspace() else units[k - 1], []).append(k)
        return cls(name, units, {c: tuple(ks) for c, ks in ends.items()})


def _ends_with(text: str, end: int, units: tuple[str, ...], count: int) -> int | None:
    """Where the first ``count`` ``units`` start when they end at ``end`` of ``text`` (matched
    backwards); ``None`` if they do not."""
    pos = end
    for unit in reversed(units[:count]):
        if unit.isspace():
            while pos > 0 and (text[pos - 1].isspace() or text[pos - 1] == "+"):
                pos -= 1
        elif pos > 0 and text[pos - 1] == unit:
            pos -= 1
        else:
            return None
    return pos


def _cut_start(view: _View, end: int, piece: _Piece) -> int | None:
    """Start of the longest run of :data:`MIN_PREFIX` or more first units of a value that ends at
    ``end`` of ``view`` (or ends there in a partly cut escape: one still undecoded, or the last
    character decoded, which may stand for a cut UTF-8 sequence); ``None`` if there is none."""
    text, stops = view.text, [end]
    if (space := _TRAILING_SPACE.search(text, max(0, end - 16), end)) is not None:
        stops.append(space.start())  # "cut\n... (12 more characters)"
    if (partial := _PARTIAL_END.search(text, max(0, end - 48), end)) is not None:
        stops.append(partial.start())
    for stop in list(stops):
        if view.parent is not None and stop > 0:
            segment = bisect.bisect_right(view.starts, stop - 1) - 1
            if not view.literal[segment]:
                stops.append(view.starts[segment])
    for stop in stops:
        last = text[stop - 1] if stop > 0 else ""
        counts = sorted({*piece.ends.get(last, ()), *piece.ends.get(" ", ())}, reverse=True)  # a run may be empty
        for count in counts:
            if (start := _ends_with(text, stop, piece.units, count)) is not None:
                return start
    return None

# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

class Secrets:
    """Secret values passed by name; filled in only when typing, redacted everywhere else.

    ``Secrets({"PASSWORD": "hunter2"})`` or ``Secrets(PASSWORD="hunter2")``. The ``repr`` shows
    names only. Values must be strings with a character other than whitespace; names match
    ``[A-Za-z_][A-Za-z0-9_.-]*``. See the module doc for the encodings :meth:`redact` finds.
    """

    def __init__(self, values: Mapping[str, str] | None = None, /, **named: str) -> None:
        merged = {**(dict(values) if values else {}), **named}
        for name, value in merged.items():
            if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
                raise SecretError(f"bad secret name {name!r}: use letters, digits, '_', '.', '-'")
            if not isinstance(value, str) or not value.strip():
                raise SecretError(f"secret {name!r} must be a string with a character other than whitespace")
        self._values: dict[str, str] = merged
        self._pattern: re.Pattern[str] | None = None
        self._pieces: list[_Piece] = []

    @classmethod
    def from_env(cls, names: Mapping[str, str]) -> Secrets:
        """Secrets read from environment variables: ``{"PASSWORD": "SHOP_PASSWORD"}``.

        Raises:
            SecretError: a variable is unset or empty.
        """
        values = {}
        for name, var in names.items():
            value = os.environ.get(var)
            if not value:
                raise SecretError(f"secret {name!r}: environment variable {var} is unset or empty")
            values[name] = value
        return cls(values)

    @property
    def names(self) -> tuple[str, ...]:
        """The secret names, sorted."""
        return tuple(sorted(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __repr__(self) -> str:
        return f"Secrets(names={list(self.names)})"

    @staticmethod
    def references(text: str) -> list[str]:
        """Names referenced as ``{{secret:NAME}}`` in ``text``, in order."""
        return _SECRET_REF.findall(text)

    def placeholder(self, name: str) -> str:
        """``{{secret:NAME}}``."""
        return "{{secret:" + name + "}}"

    def fill(self, text: str) -> str:
        """``text`` with every ``{{secret:NAME}}`` replaced by the value of NAME.

        Raises:
            SecretError: a referenced name is unknown (the message lists known names, never values).
        """

        def value_of(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._values:
                known = ", ".join(self.names) or "none"
                raise SecretError(f"unknown secret {name!r} (known secrets: {known})",
                                  hint="pass it as Secrets({'" + name + "': ...}) to the environment")
            return self._values[name]

        return _SECRET_REF.sub(value_of, text)

    # ---------------------------------------------------------------- finding

    def _compiled(self) -> re.Pattern[str] | None:
        """The pattern of every secret in a view (built on first use): group 1 a placeholder of a
        known name (left alone), group k > 1 ``self._pieces[k - 2]``."""
        if self._pattern is None and self._values:
            pieces = [_Piece.of(name, units) for name, units in dict.fromkeys(
                (name, units) for name, value in sorted(self._values.items(), key=lambda kv: -len(kv[1]))
                for form in dict.fromkeys([value, *(unicodedata.normalize(f, value) for f in ("NFC", "NFD", "NFKC"))])
                for variant in _views(form) for units in _pieces(variant.text) if units)]
            known = "|".join(re.escape(n) for n in sorted(self._values, key=len, reverse=True))
            alternatives = "".join(f"|({_piece_regex(piece.units)})" for piece in pieces)
            self._pattern = re.compile(f"(\\{{\\{{secret:(?:{known})\\}}\\}}){alternatives}")
            self._pieces = pieces
        return self._pattern

    def _in_view(self, view: _View, pattern: re.Pattern[str]) -> Iterator[tuple[int, int, str]]:
        """The secrets in one view, whole or cut short, as spans of the original text."""
        for match in pattern.finditer(view.text):
            if match.lastindex is not None and match.lastindex > 1:
                yield (*view.origin(match.start(), match.end()), self._pieces[match.lastindex - 2].name)
        for mark in _CUT_MARK.finditer(view.text):
            for piece in self._pieces:
                if (start := _cut_start(view, mark.start(), piece)) is not None and start < mark.start():
                    yield (*view.origin(start, mark.start()), piece.name)
                    break

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Where secrets are in ``text``: ``(start, end, name)`` per occurrence, in order, as
        character offsets of ``text`` (overlaps merged; placeholders are not occurrences)."""
        pattern = self._compiled()
        if pattern is None:
            return []
        found = sorted((span for view in _views(text) for span in self._in_view(view, pattern)),
                       key=lambda span: (span[0], -span[1]))  # the longest first where several start
        merged: list[tuple[int, int, str]] = []
        for start, end, name in found:
            if merged and start < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]), merged[-1][2])
            else:
                merged.append((start, end, name))
        return merged

    def contains_value(self, text: str) -> bool:
        """True if ``text`` holds a secret value in any form :meth:`redact` finds."""
        return bool(self.find(text))

    # ---------------------------------------------------------------- redacting

    def _redact_text(self, text: str) -> str:
        out, pos = [], 0
        for start, end, name in self.find(text):
            out += [text[pos:start], self.placeholder(name)]
            pos = end
        return "".join(out) + text[pos:] if out else text

    def redact(self, obj: T) -> T:
        """``obj`` with every secret value replaced by ``{{secret:NAME}}``.

        Strings are redacted in every form the module doc lists; dicts (keys and values), lists
        and tuples are rebuilt recursively; anything else is returned unchanged.
        """
        if not self._values:
            return obj
        return self._redact(obj)

    def _redact(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self._redact_text(obj)
        if isinstance(obj, dict):
            return {self._redact(k): self._redact(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._redact(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._redact(v) for v in obj)
        return obj

    def shorten(self, text: str, limit: int = 200, *, ellipsis: str = "...") -> str:
        """``text`` redacted, THEN cut to ``limit`` characters with ``ellipsis`` appended.

        The cut never leaves a secret's first :data:`MIN_PREFIX` characters or more (in any
        form) at its end: they become the placeholder. The result has at most ``limit``
        characters, plus the length of one placeholder when that replaced the tail.
        """
        text = self.redact(text)
        if len(text) <= limit:
            return text
        cut = text[: max(0, limit - len(ellipsis))]
        if self._values:
            mark = ELLIPSES[1]
            cut = self._redact_text(cut + mark)[: -len(mark)]
        return cut + ellipsis
