"""Secrets never reach storage, the spool, events or logs.

One vocabulary (`is_credential`) says which names hold credentials: headers, query parameters
and JSON fields alike. One `Redactor` is the choke point every row passes in the writer, before
anything stores, spools or announces it (`Writer(scrub=Redactor.row)`: a row snapshotted twice
within a batch is scrubbed once, in its newest state), and every log record passes
(`install_log_redaction`): it scrubs every string of a row, at any depth, of

- credential values seen in requests (a bounded set of the most recent, see `Learned`),
- key-shaped strings (`sk-...`, `AIza...`, `Bearer ...`),
- credential-named JSON fields, decoded or inside text (escaped names, any nesting level,
  list and object values, truncated bodies),
- credential query parameters and user-info of any URL in a string.

Every pass is guarded by substring tests (C speed) on the row's one orjson dump, so a row
without a hint of a secret costs one dump and a handful of `in` checks.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit, urlunsplit

import orjson

from storage.records import AttemptRow, Row, dumps, names

REDACTED = "[REDACTED]"
log = logging.getLogger(__name__)


@cache
def _columns(kind: type[Row]) -> tuple[Callable[[Row], tuple[Any, ...]], tuple[str, ...]]:
    """A row type's columns and their getter (one C call per row), asked for every row. Every
    column is looked at, whatever its declared type: what it holds is what counts."""
    columns = names(kind)
    return attrgetter(*columns), columns


# ---- the vocabulary: which names hold credentials ------------------------------------------------

# A name is split into words (snake, kebab, camel case); one credential word makes it a credential.
_CREDENTIAL_WORDS = frozenset({
    "key", "apikey", "token", "secret", "auth", "oauth", "authorization", "password", "passwd",
    "pwd", "passphrase", "credential", "credentials", "cookie", "bearer",
})  # fmt: skip
# Glued compounds: xapikey, authtoken, clientsecret, privatekey, sessiontoken...
_CREDENTIAL_ENDINGS = ("key", "token", "secret", "password", "passwd", "credential", "credentials",
                       "cookie")  # fmt: skip
# Signed URLs and SigV4 headers carry one-time signatures; in a JSON body `signature` and
# `thoughtSignature` are the providers' reasoning signatures, which a replay needs: not redacted.
_URL_CREDENTIAL_WORDS = frozenset({"signature", "sig"})
_NOT_CREDENTIAL_WORDS = frozenset({"monkey", "turkey", "hockey", "whiskey", "jockey", "donkey"})
# Words that make the credential word next to them a count, limit or cache id: max_tokens,
# promptTokenCount, x-ratelimit-remaining-tokens, budget_tokens, prompt_cache_key, token_type.
_HARMLESS_WORDS = frozenset({
    "count", "counts", "limit", "limits", "ratelimit", "remaining", "reset", "usage", "details",
    "budget", "max", "min", "type", "cache", "idempotency", "sort", "partition", "primary", "public",
})  # fmt: skip
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def is_credential(name: str, *, in_url: bool = True) -> bool:
    """A header or query parameter name (`in_url`), or a JSON field name, that holds a credential.

    A harmless word only counts next to the credential word it qualifies: `prompt_cache_key` is
    an id, `primary_private_key` is not."""
    if len(name) > 256:  # names come from traffic: only short ones are worth keeping in the cache
        return _is_credential.__wrapped__(name, in_url)
    return _is_credential(name, in_url)


@lru_cache(maxsize=8192)
def _is_credential(name: str, in_url: bool) -> bool:
    words = [w.lower() for w in _WORD.findall(name)]
    for i, word in enumerate(words):
        if not (
            word in _CREDENTIAL_WORDS
            or (in_url and word in _URL_CREDENTIAL_WORDS)
            or (word.endswith(_CREDENTIAL_ENDINGS) and word not in _NOT_CREDENTIAL_WORDS)
        ):
            continue
        if not _HARMLESS_WORDS.intersection(words[max(i - 1, 0) : i + 2]):
            return True
    return False


def is_secret_field(name: str) -> bool:
    return is_credential(name, in_url=False)


is_secret_header = is_secret_param = is_credential

# Substrings a credential name or an escaped one contains (lower case): the cheap pre-check.
_NAME_HINTS = ("key", "token", "secret", "auth", "pass", "pwd", "credential", "cookie", "\\u00")


class AnyOf:
    """Does a text contain one of a few short hints? `hint in text` scans the text once per hint;
    here hints are grouped under a rare character each contains (punctuation, a capital), whose
    occurrences a one-character search finds at memchr speed; at each one, the hints that put
    the character at the same offset are one slice and one set lookup. A hint of common letters
    only keeps its own scan."""

    RARE = "\\-_" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "zqxj"  # rarest first

    def __init__(self, hints: Iterable[str]) -> None:
        groups: dict[str, dict[tuple[int, int], set[str]]] = {}
        plain: list[str] = []
        for hint in hints:
            rare = [i for i, c in enumerate(hint) if c in self.RARE]
            if not rare:
                plain.append(hint)
                continue
            at = min(rare, key=lambda i: self.RARE.index(hint[i]))
            groups.setdefault(hint[at], {}).setdefault((at, len(hint)), set()).add(hint)
        self.plain = tuple(plain)
        self.groups = tuple(
            (
                anchor,
                tuple((offset, length, frozenset(found)) for (offset, length), found in shapes.items()),
                tuple(hint for found in shapes.values() for hint in found),
            )
            for anchor, shapes in groups.items()
        )

    def __call__(self, text: str) -> bool:
        for hint in self.plain:
            if hint in text:
                return True
        for anchor, shapes, hints in self.groups:
            count = text.count(anchor)
            if not count:
                continue
            # checking each occurrence costs about what scanning ~500 characters once does: a
            # text dense in the character (snake_case JSON, ids) is scanned per hint instead
            if count * len(shapes) > len(hints) * (1 + len(text) // 500):
                if any(hint in text for hint in hints):
                    return True
                continue
            at = text.find(anchor)
            while at >= 0:
                for offset, length, found in shapes:
                    if at >= offset and text[at - offset : at - offset + length] in found:
                        return True
                at = text.find(anchor, at + 1)
        return False


# ---- key-shaped values ------------------------------------------------------------------------------

# Key formats of the providers and services we see; also catches masked keys echoed in errors.
_KEY_PATTERN = re.compile(
    r"\b(?:sk-[A-Za-z0-9_*\-]{8,}|AIza[0-9A-Za-z_\-]{30,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
    r"|(?:xai|gsk|hf|pplx|csk|fw|r8|nvapi|ghp|gho|ghu|ghs|ghr|github_pat|glpat|xox[abprs])[-_][A-Za-z0-9_\-]{20,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"
)
_KEY_HINTS = ("sk-", "AIza", "AKIA", "ASIA", "xai-", "gsk_", "hf_", "pplx-", "fw_", "r8_",
              "nvapi-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox", "eyJ",
              "earer", "EARER")  # fmt: skip
_has_key_hint = AnyOf(_KEY_HINTS)


# ---- learned credential values ------------------------------------------------------------------


class Learned:
    """The credential values requests carried, most recent first, at most `size` of them.

    Bounded because some credentials are new on every request (signed URLs, SigV4): an old key
    falls out only after `size` newer ones, and a key in use is refreshed each time it is seen.
    Readers use an immutable snapshot, so the writer and logging threads never see it change.
    """

    MIN_LENGTH = 8  # shorter values are too common to replace everywhere

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.forms: tuple[str, ...] = ()  # each value as it appears in text: raw and URL-quoted
        self.dumped: tuple[tuple[str, str], ...] = ()  # (as in an orjson dump, raw form)
        self.generation = 0  # counts new values: what was clean before may not be now

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) < self.MIN_LENGTH or REDACTED in value:
            return
        with self._lock:
            if value in self._values:
                self._values.move_to_end(value)
                return
            self._values[value] = None
            while len(self._values) > self.size:
                self._values.popitem(last=False)
            forms = dict.fromkeys(f for v in reversed(self._values) for f in (v, quote(v, safe="")))
            self.forms = tuple(forms)
            self.dumped = tuple((orjson.dumps(f)[1:-1].decode(), f) for f in forms)
            self.generation += 1

    def __len__(self) -> int:
        return len(self._values)


def _credential_pieces(value: str) -> list[str]:
    """A credential header's value and the parts a text may quote alone: `Bearer <token>`,
    `session=<id>; ...`, Basic's password, SigV4's key id (never its one-time signature)."""
    pieces = [value]
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
            pieces.append(base64.b64decode(rest.strip(), validate=True).decode().partition(":")[2])
    for part in re.split(r"[\s,;]+", rest if rest else value):
        name, sep, tail = part.partition("=")
        if sep and is_credential(name) and "sig" in name.lower():
            continue  # a signature is good for one request and never echoed
        pieces.append(tail if sep else part)
    return pieces


_SHORTEST = 5  # a shorter value holds no secret: learned ones have 8+ characters, `"k":1` 5
_SMALL = 512  # shorter strings of a row are probed together
_CLEAN_SIZE = 4096  # values remembered clean: a few calls' ids, names and timestamps, and fields
_NO_TEXT = frozenset({int, float, bool})  # column values with no text in them to scrub

# ---- the choke point --------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Passes:
    """Which scrubs a value needs, decided once per row from its dump."""

    secrets: tuple[str, ...]
    keys: bool
    fields: bool
    urls: bool

    def any(self) -> bool:
        return bool(self.secrets) or self.keys or self.fields or self.urls


class Redactor:
    def __init__(self, learned: Learned | None = None) -> None:
        self.learned = learned if learned is not None else LEARNED
        self._clean: dict[str | tuple[int, int], None] = {}  # values found clean (see _found_clean)
        self._generation = self.learned.generation

    # ---- learning ----

    def learn(self, header_items: Iterable[tuple[str, str]], url: str = "") -> set[str]:
        """Remember the credentials a request carries; returns them."""
        found: set[str] = set()
        for name, value in header_items:
            if is_credential(name) and value != REDACTED:
                found.update(_credential_pieces(value))
        if url:
            parts = urlsplit(url)
            if parts.password:
                found.add(unquote_plus(parts.password))
            found.update(v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _param_learnable(k))
        found = {v for v in found if len(v.strip()) >= Learned.MIN_LENGTH and REDACTED not in v}
        for value in found:
            self.learned.add(value)
        return found

    # ---- rows ----

    def row[R: Row](self, row: R) -> R:
        """The row with every string field scrubbed, at any depth; the same row when clean."""
        if isinstance(row, AttemptRow):  # its request's credentials, before anything is scrubbed
            self.learn(row.request_headers.items(), row.url)
        for _ in range(3):  # a credential-named field teaches its value: the row again, with it
            generation = self.learned.generation
            row = self._row(row)
            if self.learned.generation == generation:
                return row
        return row

    def _row[R: Row](self, row: R) -> R:
        changes = {}
        small: dict[str, str] = {}  # ids, names, timestamps: one probe for all
        get, columns = _columns(type(row))
        for name, value in zip(columns, get(row), strict=True):
            if value is None or value.__class__ in _NO_TEXT:
                continue
            if isinstance(value, str) and len(value) < _SMALL:
                if len(value) >= _SHORTEST:
                    small[name] = value
            elif isinstance(value, str | dict | list) and value:
                scrubbed = self._field(value)
                if scrubbed is not value:
                    changes[name] = scrubbed
        clean = self._clean_now()  # after the fields: one may have taught a secret
        small = {name: value for name, value in small.items() if value not in clean}
        if small:
            probe = "\x00".join(small.values())
            passes = self._passes(probe)
            for name, value in small.items():
                if passes.any() and (scrubbed := self._str(value, passes)) is not value:
                    changes[name] = scrubbed
                else:
                    self._found_clean(value)
        return dataclasses.replace(row, **changes) if changes else row  # type: ignore[type-var]

    def _field(self, value: str | dict[str, Any] | list[Any]) -> Any:
        """One long column. Rows are snapshots sent again as they change (a step's request, a
        body, headers): a value found clean before is not scanned again."""
        clean = self._clean_now()
        if isinstance(value, str):
            seen = (len(value), hash(value))  # a str caches its hash
            passes = None if seen in clean else self._passes(value)
        else:
            dump = dumps(value)
            seen = (len(dump), hash(dump))
            passes = None if seen in clean else self._passes(dump.decode(), dumped=True)
        if passes is None:
            return value
        scrubbed = self._value(value, passes) if passes.any() else value
        if scrubbed is value:
            self._found_clean(seen)
        return scrubbed

    def _clean_now(self) -> dict[str | tuple[int, int], None]:
        """The values found clean, forgotten when a secret was learned since (they may hold it)."""
        if self._generation != self.learned.generation:
            self._clean.clear()
            self._generation = self.learned.generation
        return self._clean

    def _found_clean(self, seen: str | tuple[int, int]) -> None:
        """Remember a value no scrub changed, until a new secret is learned: a short string by
        itself, a long one or a dump by (length, hash), so that memory holds no long text."""
        self._clean[seen] = None
        if len(self._clean) > _CLEAN_SIZE:
            del self._clean[next(iter(self._clean))]

    def value(self, value: Any) -> Any:
        """A decoded JSON value, scrubbed."""
        return self._value(value, self._passes(dumps(value).decode(), dumped=True))

    def text(self, raw: str) -> str:
        """A text (a body, a log line), scrubbed."""
        passes = self._passes(raw)
        return self._str(raw, passes)

    def _passes(self, text: str, *, dumped: bool = False) -> _Passes:
        """From a text, or a value's orjson dump (`dumped`: credentials are looked for as JSON
        escapes them). Str tests, not bytes: `in` on bytes pays the buffer protocol per call.
        `str.lower` lowers what `bytes.lower` does and more (never fewer hints are seen)."""
        if dumped:
            secrets = tuple(raw for form, raw in self.learned.dumped if form in text)
        else:
            secrets = tuple(form for form in self.learned.forms if form in text)
        lower = text.lower()
        return _Passes(
            secrets=secrets,
            keys=_has_key_hint(text),
            fields=any(h in lower for h in _NAME_HINTS),
            urls=("=" in text and ("?" in text or "&" in text)) or "@" in text,
        )

    # ---- the walk: returns the very object when nothing changed ----

    def _value(self, value: Any, passes: _Passes) -> Any:
        if isinstance(value, str):
            return self._str(value, passes)
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            changed = False
            for key, item in value.items():
                new_key = self._str(key, passes) if isinstance(key, str) else key
                if passes.fields and isinstance(key, str) and _redactable(item) and is_secret_field(key):
                    _learn_field(self.learned, item)
                    new = REDACTED
                else:
                    new = self._value(item, passes)
                changed = changed or new is not item or new_key is not key
                out[new_key] = new
            return out if changed else value
        if isinstance(value, list):
            items = [self._value(item, passes) for item in value]
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        return value

    def _str(self, text: str, passes: _Passes) -> str:
        out = text
        for secret in passes.secrets:
            if secret in out:
                out = out.replace(secret, REDACTED)
        if passes.keys and _has_key_hint(out):
            out = _KEY_PATTERN.sub(REDACTED, out)
        if passes.urls and ("=" in out or "@" in out):
            out = _urls_in_text(out)
        if passes.fields and '"' in out and ":" in out:
            out = _fields_in_text(out, self.learned)
        return text if out == text else out


def _redactable(value: Any) -> bool:
    """What a credential-named field may hold that is redacted: not null, not a flag."""
    return value is not None and not isinstance(value, bool) and value != REDACTED and value != ""


def _param_learnable(name: str) -> bool:
    return is_credential(name) and "sig" not in name.lower()


_SECRET_SHAPED = re.compile(r"[A-Za-z0-9_\-.~+/=:]{12,}")


def _learn_field(learned: Learned, value: Any) -> None:
    """A credential field's value is scrubbed wherever else it shows up (an error echoing it), if
    it looks like one: one token, letters and digits mixed. A field that only sounds like a
    credential (`hostCredential: "/home/dev/project"`) is redacted where it stands, but its
    value, a path or a word, must not be erased from every text that mentions it."""
    if isinstance(value, str) and _looks_secret(value.strip()):
        learned.add(value)


def _looks_secret(value: str) -> bool:
    if not _SECRET_SHAPED.fullmatch(value) or value.startswith(("/", "./", "~")):
        return False
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


# ---- credential-named fields inside text -----------------------------------------------------------

_COLON = re.compile(r"\s*:\s*")
_ESCAPED_CHAR = re.compile(r"\\+u([0-9a-fA-F]{4})|\\+(.)")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)
_BAREWORD = re.compile(r"[^,}\]\s\\]+")
_NOT_IN_A_NAME = set('{}[],:\n"')
_LONGEST_NAME = 512  # characters of a key name in text, escapes included


def _decode_name(raw: str) -> str:
    """A key as written in JSON at any nesting level (`api\\u005fkey`, `api\\\\u005fkey`)."""
    if "\\" not in raw:
        return raw
    return _ESCAPED_CHAR.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), raw)


def _hits(text: str) -> list[int]:
    lower = text.lower()
    found: list[int] = []
    for hint in _NAME_HINTS:
        at = lower.find(hint)
        while at >= 0:
            found.append(at)
            at = lower.find(hint, at + len(hint))
    return sorted(found)


def _fields_in_text(text: str, learned: Learned) -> str:
    """Values of credential-named keys in JSON text: a body, a JSON string inside a body (keys
    then read `\\"api_key\\"`), a truncated body or an SSE stream. Names may be escaped and long;
    values may be strings, numbers, lists or objects. What cannot be delimited is cut to the end."""
    pieces: list[str] = []
    copied = 0  # text[:copied] is in pieces
    resume = 0  # no key starts before this
    for hit in _hits(text):
        if hit < resume:
            continue
        start = text.rfind('"', max(resume, hit - _LONGEST_NAME), hit)  # bounded: no quadratic scan
        end = text.find('"', hit, hit + _LONGEST_NAME)
        if start < 0 or end < 0:
            continue
        raw = text[start + 1 : end]
        name = raw.rstrip("\\")
        level = len(raw) - len(name)  # backslashes before the closing quote: the nesting level
        colon = _COLON.match(text, end + 1)
        if colon is None or _NOT_IN_A_NAME.intersection(name):
            continue
        if not is_secret_field(_decode_name(name)):
            resume = colon.end()
            continue
        value_start = colon.end()
        span = _value_span(text, value_start, level, learned)
        if span is None:
            resume = value_start
            continue
        first, last, replacement = span
        pieces += [text[copied:first], replacement]
        copied = resume = last
    if not pieces:
        return text
    pieces.append(text[copied:])
    return "".join(pieces)


def _value_span(text: str, at: int, level: int, learned: Learned) -> tuple[int, int, str] | None:
    """(start, end, replacement) of the value at `at`, or None when there is nothing to redact."""
    quote_mark = "\\" * level + '"'
    if text.startswith(quote_mark, at):
        body = at + len(quote_mark)
        if level == 0:
            match = _JSON_STRING.match(text, at)
            end = match.end() - 1 if match else len(text)
            if match:
                with contextlib.suppress(orjson.JSONDecodeError):
                    _learn_field(learned, orjson.loads(match.group()))
        else:
            end = _closing_quote(text, body, level)
        if text[body:end] in (REDACTED, ""):
            return None
        return body, end, REDACTED
    if at < len(text) and text[at] in "[{":
        return at, _structure_end(text, at, level), f"{quote_mark}{REDACTED}{quote_mark}"
    match = _BAREWORD.match(text, at)
    if match is None or match.group() in ("null", "true", "false"):
        return None
    return at, match.end(), f"{quote_mark}{REDACTED}{quote_mark}"


def _closing_quote(text: str, start: int, level: int) -> int:
    """The closing quote of a string nested `level` deep: one with exactly `level` backslashes."""
    mark = "\\" * level + '"'
    at = text.find(mark, start)
    while at >= 0:
        if text[at - 1] != "\\":
            return at
        at = text.find(mark, at + 1)
    return len(text)


def _structure_end(text: str, start: int, level: int) -> int:
    """Just past the list or object at `start`; the end of the text when it is cut short."""
    if level == 0:
        depth = 0
        for match in _STRUCTURE.finditer(text, start):
            token = match.group()
            if token in "[{":
                depth += 1
            elif token in "]}":
                depth -= 1
                if depth == 0:
                    return match.end()
        return len(text)
    # nested in a JSON string: count brackets, but never past the end of that string
    bound = _JSON_STRING.match('"' + text[start:])
    limit = start + (bound.end() - 2 if bound else len(text) - start)
    depth = 0
    for at in range(start, limit):
        char = text[at]
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return at + 1
    return limit


# ---- URLs inside text -------------------------------------------------------------------------------

_PARAM = re.compile(r"([?&;])([^=&#\s\"'<>?]{1,200})=([^&#\s\"'<>\\]*)")
_USERINFO = re.compile(r"(://)([^/\s:@\"'<>]{0,256}):([^/\s@\"'<>]{1,256})@")


def _urls_in_text(text: str) -> str:
    """Credential query parameters and passwords of any URL in a text."""
    if "=" in text:
        text = _PARAM.sub(_param, text)
    if "@" in text and "://" in text:
        text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{REDACTED}@", text)
    return text


def _param(match: re.Match[str]) -> str:
    if match.group(3) in ("", REDACTED) or not is_credential(unquote_plus(match.group(2))):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}={REDACTED}"


# ---- logs -------------------------------------------------------------------------------------------

_installed: list[Redactor] = []


def install_log_redaction(redactor: Redactor) -> None:
    """Every log record, from any logger and thread, has its message and exception text
    scrubbed when it is made (a record factory: handlers added later are covered too)."""
    if _installed:
        _installed[0] = redactor
        return
    _installed.append(redactor)
    make = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        scrub = _installed[0].text
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it, with nothing to leak
            return record
        if (clean := scrub(message)) != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)


# ---- the pipeline's per-field helpers, on the same vocabulary and scrubs ----------------------------

LEARNED = Learned()
_DEFAULT = Redactor(LEARNED)


def headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case header names to values, secrets replaced; repeated headers joined by ', '."""
    out: dict[str, str] = {}
    for name, value in items:
        name = name.lower()
        value = REDACTED if is_credential(name) else value
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def secret_values(header_items: Iterable[tuple[str, str]], url: str) -> set[str]:
    """The credentials a request carries (also learned, so every later row is scrubbed of them)."""
    return _DEFAULT.learn(header_items, url)


def url(raw: str) -> str:
    """The URL without user-info and with credential query parameters redacted (the rest as sent)."""
    parts = urlsplit(raw)
    netloc = parts.netloc.rpartition("@")[2]
    pairs = parts.query.split("&") if parts.query else []
    query = "&".join(
        f"{name}={REDACTED}" if sep and is_credential(unquote_plus(name)) else f"{name}{sep}{value}"
        for name, sep, value in (pair.partition("=") for pair in pairs)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def json_fields(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a decoded JSON value with credential-named fields redacted at any depth, and
    known credential values and key-shaped strings scrubbed from every string in it."""
    for secret in secrets:
        LEARNED.add(secret)
    return _DEFAULT.value(value)


def text(raw: str, secrets: Iterable[str] = ()) -> str:
    """Scrub known credential values, key-shaped strings and credential JSON fields from text."""
    for secret in secrets:
        LEARNED.add(secret)
    return _DEFAULT.text(raw)
