"""What kind of run a call starts, from the normalized request alone.

Precedence: the `X-Chatdebug-Kind` header; a kind the client states (Codex's turn metadata);
profiles of known applications (data: `profiles/builtin.json`, plus the user's `--profiles`
files, which win); rules that follow what a request asks for, for applications nobody profiled;
and last `chat_turn`. Only a request that could not be read at all is `unknown`.

The rules key on meaning, not on one application's words or numbers: a title request asks for
a title, name or one-line summary of the session (in its instructions, its output schema or its
forced tool), whatever output cap it sends; a compaction asks for a summary of the history so
far, wherever the instruction stands; a side call that hands structured data or an artifact
back to the application is `quickgen`. A turn that merely starts from a summary is a turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from addons.normalized import Message, Request, TextPart, ToolCallPart, ToolResultPart
from addons.prompts import user_words

Kind = Literal["chat_turn", "compaction", "title_generation", "quickgen", "unknown"]
KINDS: tuple[str, ...] = ("chat_turn", "compaction", "title_generation", "quickgen", "unknown")
SIDE_KINDS = ("compaction", "title_generation", "quickgen")

# Client-stated kinds (Codex `request_kind`, `thread_source`) in our vocabulary.
CLIENT_KINDS = {
    "turn": "chat_turn",
    "chat": "chat_turn",
    "compaction": "compaction",
    "compact": "compaction",
    "title": "title_generation",
    "title_generation": "title_generation",
    "thread_title": "title_generation",
    "prewarm": "quickgen",
    "memory": "quickgen",
}


@dataclass(frozen=True, slots=True)
class Classification:
    kind: str
    source: str  # header | client_metadata | profile | heuristic | default
    reason: str


# ---- facts about a request that rules look at ------------------------------------------------


def fold(text: str) -> str:
    """Case and whitespace do not matter when matching prompts."""
    return " ".join(text.split()).casefold()


# An application sends the same system prompt with every call (agents' run to tens of KB):
# it is folded, and its head searched, once; user texts are new each call and are not kept.
_fold_system = lru_cache(maxsize=16)(fold)


def _texts(message: Message) -> list[str]:
    return [p.text for p in message.parts if isinstance(p, TextPart) and p.text.strip()]


HEAD = 2_000  # an instruction stands at the start or the end of its text, not in the middle


def _ends(text: str) -> str:
    """The head and tail of a long text: where instructions stand (the middle is quoted content)."""
    return text if len(text) <= 2 * HEAD else f"{text[:HEAD]} … {text[-HEAD:]}"


@dataclass
class Facts:
    request: Request
    path: str

    @cached_property
    def conversation(self) -> list[Message]:
        return [m for m in self.request.messages if m.role != "system"]

    @cached_property
    def system(self) -> str:
        inline = [t for m in self.request.messages if m.role == "system" for t in _texts(m)]
        return _fold_system("\n".join([self.request.system or "", *inline]))

    @cached_property
    def system_head(self) -> str:
        """The system prompt's own instruction: its start (agents append long guidance after it)."""
        return _fold_system(self.request.system or "")[:HEAD] or self.system[:HEAD]

    @cached_property
    def user_messages(self) -> list[Message]:
        return [m for m in self.conversation if m.role == "user" and _texts(m)]

    @cached_property
    def first_user(self) -> list[str]:
        return [fold(t) for t in _texts(self.user_messages[0])] if self.user_messages else []

    @cached_property
    def last_user(self) -> list[str]:
        """Texts of the final user (or tool-result) message: each block, and all of them joined."""
        if not self.conversation or self.conversation[-1].role not in ("user", "tool"):
            return []
        texts = [fold(t) for t in _texts(self.conversation[-1])]
        return [*texts, " ".join(texts)] if len(texts) > 1 else texts

    @cached_property
    def last_user_ends(self) -> list[str]:
        """The final message's instructions as the rules read them: each block's ends, without the
        application's tagged boilerplate (a `<command-name>/compact</command-name>` echo asks nothing)."""
        if not self.conversation or self.conversation[-1].role not in ("user", "tool"):
            return []
        texts = [fold(w) for t in _texts(self.conversation[-1]) if (w := user_words(t))]
        joined = [*texts, " ".join(texts)] if len(texts) > 1 else texts
        return [_ends(t) for t in joined[:20]]

    @cached_property
    def tool_names(self) -> set[str]:
        return {t.name for t in self.request.tools}

    @cached_property
    def tool_choice_name(self) -> str | None:
        return self.request.signals.forced_tool

    @cached_property
    def max_output_tokens(self) -> int | None:
        value = self.request.options.get("max_output_tokens")
        return value if isinstance(value, int) else None

    @cached_property
    def used_tools(self) -> bool:
        return any(isinstance(p, ToolCallPart | ToolResultPart) for m in self.conversation for p in m.parts)

    @cached_property
    def history_chars(self) -> int:
        return sum(len(t) for m in self.conversation for t in _texts(m))

    @cached_property
    def output_fields(self) -> set[str]:
        schema = self.request.signals.output_schema
        return {fold(f) for f in schema.fields} if schema else set()

    @cached_property
    def side_call_shape(self) -> bool:
        """Offers the model nothing to do but answer: no tools, or one it must call, or a lone
        schema-like tool (a title tool offered without `tool_choice`)."""
        return not self.tool_names or self.tool_choice_name is not None or len(self.tool_names) == 1


# ---- profiles: data-driven rules ---------------------------------------------------------------


class Match(BaseModel):
    """Every condition given must hold. Text conditions ignore case and runs of whitespace."""

    model_config = ConfigDict(extra="forbid")

    system_starts_with: str | None = None
    system_contains: str | None = None
    first_user_starts_with: str | None = None
    last_user_starts_with: str | None = None
    last_user_contains: str | None = None  # any text block of the final user message
    any_instruction_contains: str | None = None  # the system prompt or the final user message
    tools_include: str | None = None
    tools_present: bool | None = None
    tool_choice_name: str | None = None
    output_field: str | None = None  # a top-level field of the requested output schema
    structured_output: bool | None = None
    client_matches: str | None = None  # a regular expression over the client (user agent product)
    client_purpose: str | None = None  # a purpose the client states (Codex `thread_source`)
    compaction_endpoint: bool | None = None
    max_output_tokens_at_most: int | None = None
    model_matches: str | None = None  # a regular expression
    path_ends_with: str | None = None
    message_count_at_most: int | None = None

    def compile(self) -> list[tuple[Callable[[Facts, Any], bool], Any]]:
        """The conditions as (check, value) pairs, text values folded once."""
        given = self.model_dump(exclude_none=True).items()
        return [(CHECKS[name], fold(v) if name in FOLDED else v) for name, v in given]


FOLDED = {
    "system_starts_with",
    "system_contains",
    "first_user_starts_with",
    "last_user_starts_with",
    "last_user_contains",
    "any_instruction_contains",
    "output_field",
}
CHECKS: dict[str, Callable[[Facts, Any], bool]] = {
    "system_starts_with": lambda f, v: f.system.startswith(v),
    "system_contains": lambda f, v: v in f.system,
    "first_user_starts_with": lambda f, v: any(t.startswith(v) for t in f.first_user),
    "last_user_starts_with": lambda f, v: any(t.startswith(v) for t in f.last_user),
    "last_user_contains": lambda f, v: any(v in t for t in f.last_user),
    "any_instruction_contains": lambda f, v: v in f.system or any(v in t for t in f.last_user),
    "tools_include": lambda f, v: v in f.tool_names,
    "tools_present": lambda f, v: bool(f.tool_names) == v,
    "tool_choice_name": lambda f, v: f.tool_choice_name == v,
    "output_field": lambda f, v: v in f.output_fields,
    "structured_output": lambda f, v: (f.request.signals.output_schema is not None) == v,
    "client_matches": lambda f, v: re.search(v, f.request.signals.client or "") is not None,
    "client_purpose": lambda f, v: f.request.signals.client_purpose == v,
    "compaction_endpoint": lambda f, v: f.request.signals.compaction_endpoint == v,
    "max_output_tokens_at_most": lambda f, v: f.max_output_tokens is not None and f.max_output_tokens <= v,
    "model_matches": lambda f, v: re.search(v, f.request.model or "") is not None,
    "path_ends_with": lambda f, v: f.path.endswith(v),
    "message_count_at_most": lambda f, v: len(f.conversation) <= v,
}


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind
    reason: str
    match: Match


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    versions: str | None = None  # the releases whose traffic the rules were taken from
    rules: list[Rule]


class ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profiles: list[Profile]


def load_profiles(extra: list[Path] | tuple[Path, ...] = ()) -> list[Profile]:
    """The user's profiles first (they win), then the built-in ones."""
    builtin = resources.files("addons").joinpath("profiles/builtin.json").read_bytes()
    files = [path.read_bytes() for path in extra] + [builtin]
    return [p for raw in files for p in ProfileFile.model_validate(orjson.loads(raw)).profiles]


# ---- rules that follow meaning -------------------------------------------------------------------

_SUBJECT = r"(conversation|chat|session|thread|discussion|dialog(ue)?|exchange|task|request|query|prompt)"
_NAME = r"(title|headline|name|label|subject line)"
_SHORT = (
    r"(one|1|single)[ -]?(line|sentence)"
    r"|\b(\d+|few|short|concise|brief)(\s*-\s*\d+)?\s*(words?|char(acter)?s?)"
    r"|max(imum)?\.? \d+ char"
)
_TITLE_ASK = re.compile(
    rf"\b{_NAME}s?\b.{{0,80}}\b(of|for|to|from|captur\w*|summariz\w*|describ\w*)\b.{{0,60}}\b{_SUBJECT}"
    rf"|\b{_SUBJECT}\s+(title|headline|name)s?\b"
    rf"|\b(generate|create|write|suggest|give|produce|propose|come up with|output|return|pick|choose)\b"
    rf".{{0,60}}\b(title|headline)s?\b"
    rf"|\btitle (generator|writer|maker)\b|\bnam(e|ing) (the|this) {_SUBJECT}"
    rf"|\bsummar\w*\b.{{0,120}}({_SHORT}).{{0,120}}|({_SHORT}).{{0,60}}\bsummar(y|ize|ise)\b"
)
# Words one of whose spellings every match of `_TITLE_ASK` contains: a text without any of them
# cannot match, and an `in` test (C speed) says so far quicker than the pattern's backtracking.
_TITLE_WORDS = ("title", "headline", "nam", "label", "subject line", "summar")
_TITLE_FIELDS = {"title", "name", "headline", "summary_title", "session_title", "chat_title", "thread_title"}

# An instruction to summarise the history: an imperative or a stated role, never a report that
# a summary follows ("the conversation is summarized below" opens a continued session).
_SUMMARY_ASK = re.compile(
    r"\b(summari[sz]e|condense|compact|distill|recap|compress)\b(?! below)"
    r"|\b(create|write|produce|provide|generate|give|prepare|draft|output|return|make)\b[^.!?\n]{0,80}"
    r"\b(summary|summaries|recap|handoff|hand-off|hand off|checkpoint|snapshot|digest)\b"
    r"|\b(tasked with|job is to|task is to|goal is to|you are an?|act as an?|role is)\b[^.!?\n]{0,60}"
    r"\b(summari[sz]\w*|condens\w*|compact\w*|distill\w*|compress\w*)"
    r"|\b(summari[sz]ing|distilling|condensing|compacting)\b[^.!?\n]{0,40}\b(the|this|our|chat|conversation|history)"
    r"|\bsummari[sz]es\b"
)
_SUMMARY_WORDS = ("summar", "condens", "compact", "distill", "recap", "compress", "handoff",
                  "hand-off", "hand off", "checkpoint", "snapshot", "digest")  # fmt: skip
_OF_HISTORY = re.compile(
    r"\b(conversation|chat|context|session|history|transcript|so far|above|thread|discussion|dialog(ue)?"
    r"|messages|exchange|work)\b"
)
_CONTINUES = re.compile(
    r"\b(being continued|continued from|continuing from|resumed from|picks? up from)\b"
    r"|\b(summary|summari[sz]ed) (is )?(below|above|follows)\b|\bhere is (a|the) summary\b"
)
# Side calls that hand something back to the application rather than answer the user.
_ARTIFACT_ASK = re.compile(
    r"\byou are an? [\w\s-]{0,40}(generator|classifier|router|labell?er|tagger|extractor|categori[sz]er"
    r"|namer|evaluator|judge|scorer|detector)\b"
    r"|\b(generate|write|suggest|propose|produce|create)\b[^.!?\n]{0,30}"
    r"\b(commit messages?|tags|labels|follow-?ups?|follow-up questions|questions to ask|keywords|categories"
    r"|memories)\b"
    r"|\b(extract|save|update|record)\b[^.!?\n]{0,40}\b(memor(y|ies)|facts about the user)\b"
    r"|\blabel what\b|\bclassify (the|this|whether)\b|\bcomplexity score\b"
    r"|\b(respond|reply|answer) (with )?only (with )?(json|a json|yes|true|one word)\b"
)
_ARTIFACT_WORDS = ("you are a", "commit message", "tags", "labels", "follow", "questions to ask",
                   "keywords", "categories", "memor", "facts about the user", "label what",
                   "classify ", "complexity score", "only ")  # fmt: skip
COMPACTION_MIN_MESSAGES = 3
COMPACTION_MIN_CHARS = 1500
INLINE_TRANSCRIPT_CHARS = 400  # one message that quotes the transcript it asks to summarise


def _asks(pattern: re.Pattern[str], words: tuple[str, ...], text: str) -> bool:
    """`pattern` matches somewhere in `text`; `words` are substrings each match needs one of."""
    return any(w in text for w in words) and pattern.search(text) is not None


_asks_system = lru_cache(maxsize=64)(_asks)  # over a system prompt's head: the same each call


def _summary_ask(text: str) -> bool:
    if not any(w in text for w in _SUMMARY_WORDS):
        return False  # no match of _SUMMARY_ASK is possible
    if _CONTINUES.search(text[:400]):
        return False  # a turn that starts from a summary is not asking for one
    for match in _SUMMARY_ASK.finditer(text):
        window = text[max(0, match.start() - 150) : match.end() + 150]
        if _OF_HISTORY.search(window):
            return True
    return False


_summary_ask_system = lru_cache(maxsize=64)(_summary_ask)  # a system prompt's head: the same each call


def title_reason(f: Facts) -> str | None:
    if f.used_tools or not f.side_call_shape:
        return None
    if f.tool_choice_name and "title" in f.tool_choice_name.casefold():
        return f"a forced tool for the title ({f.tool_choice_name})"
    fields = f.output_fields
    if fields & _TITLE_FIELDS and fields <= _TITLE_FIELDS | {"emoji", "reasoning", "reason"}:
        return f"an output schema for a title ({', '.join(sorted(f.output_fields))})"
    if len(f.tool_names) == 1 and any("title" in n.casefold() for n in f.tool_names):
        return f"a lone title tool ({next(iter(f.tool_names))})"
    if _asks_system(_TITLE_ASK, _TITLE_WORDS, f.system_head):
        return "the system prompt asks for a title of the session"
    if any(_asks(_TITLE_ASK, _TITLE_WORDS, t) for t in f.last_user_ends):
        return "the final message asks for a title of the session"
    return None


def compaction_reason(f: Facts) -> str | None:
    if f.request.signals.compaction_endpoint:
        return "a compaction endpoint"
    long_history = len(f.conversation) >= COMPACTION_MIN_MESSAGES or f.history_chars >= COMPACTION_MIN_CHARS
    for text in f.last_user_ends:
        if (long_history or len(text) >= INLINE_TRANSCRIPT_CHARS) and _summary_ask(text):
            return "the final message asks for a summary of the conversation so far"
    if f.conversation and _summary_ask_system(f.system_head[:800]):
        return "the system prompt asks to summarise the history"
    return None


def quickgen_reason(f: Facts) -> str | None:
    if not f.side_call_shape or len(f.user_messages) > 2:
        return None
    if f.request.signals.output_schema is not None and not f.tool_names:
        return "a side call asking for structured output"
    if f.tool_choice_name is not None and not f.used_tools:
        return f"a side call forcing the tool {f.tool_choice_name}"
    if not f.tool_names and (
        _asks_system(_ARTIFACT_ASK, _ARTIFACT_WORDS, f.system_head)
        or any(_asks(_ARTIFACT_ASK, _ARTIFACT_WORDS, t) for t in f.last_user_ends)
    ):
        return "a side call asking for something the application uses"
    return None


def heuristic(f: Facts) -> Classification | None:
    if reason := title_reason(f):
        return Classification("title_generation", "heuristic", reason)
    if reason := compaction_reason(f):
        return Classification("compaction", "heuristic", reason)
    if reason := quickgen_reason(f):
        return Classification("quickgen", "heuristic", reason)
    return None


# ---- the classifier -----------------------------------------------------------------------------


def client_stated(request: Request) -> Classification | None:
    signals = request.signals
    for stated, source in ((signals.client_purpose, "thread_source"), (signals.client_kind, "request_kind")):
        kind = CLIENT_KINDS.get(stated.lower()) if stated else None
        if kind is not None:
            return Classification(kind, "client_metadata", f"the client states {source}={stated}")
    return None


# Conditions on the system prompt alone: an application sends the same one with every call, so
# which rules they let through is decided once per prompt (`Classifier._rules_for`).
SYSTEM_CHECKS = frozenset({CHECKS["system_starts_with"], CHECKS["system_contains"]})
_SYSTEMS_KEPT = 32  # system prompts whose rules are kept: a few applications' main and side calls

Conditions = list[tuple[Callable[[Facts, Any], bool], Any]]


class Classifier:
    def __init__(self, profile_files: list[Path] | tuple[Path, ...] = ()) -> None:
        self.profiles = load_profiles(profile_files)
        self.rules = [
            (rule.kind, f"{profile.name}: {rule.reason}", conditions)
            for profile in self.profiles
            for rule in profile.rules
            if (conditions := rule.match.compile())
        ]
        self._by_system: dict[str, list[tuple[str, str, Conditions]]] = {}

    def _rules_for(self, facts: Facts) -> list[tuple[str, str, Conditions]]:
        """The rules, in order, whose system prompt conditions hold, with their other conditions."""
        system = facts.system
        found = self._by_system.get(system)
        if found is None:
            found = []
            for kind, reason, conditions in self.rules:
                on_system = [(check, value) for check, value in conditions if check in SYSTEM_CHECKS]
                if all(check(facts, value) for check, value in on_system):
                    found.append((kind, reason, [c for c in conditions if c[0] not in SYSTEM_CHECKS]))
            if len(self._by_system) >= _SYSTEMS_KEPT:
                del self._by_system[next(iter(self._by_system))]
            self._by_system[system] = found
        return found

    def classify(self, request: Request | None, path: str, hints: dict[str, str]) -> Classification:
        stated = hints.get("x-chatdebug-kind", "").strip().lower()
        if stated in KINDS:
            return Classification(stated, "header", f"X-Chatdebug-Kind: {stated}")
        if request is None:
            return Classification("unknown", "default", "the request body could not be read as JSON")
        # a stated `turn` is what Codex says of its title calls too: for it, profiles and meaning go first
        found = client_stated(request)
        if found is not None and found.kind != "chat_turn":
            return found
        facts = Facts(request, path)
        for kind, reason, conditions in self._rules_for(facts):
            if all(check(facts, value) for check, value in conditions):
                return Classification(kind, "profile", reason)
        return heuristic(facts) or found or Classification("chat_turn", "default", "a conversational call")
