"""What kind of run a call starts, from the request alone.

Precedence: the `X-Chatdebug-Kind` header; client metadata that states it (Codex's
`x-codex-turn-metadata`); profiles of known applications (data: `profiles/builtin.json`, plus
the user's `--profiles` files, which win); heuristics for applications nobody profiled; and
last the default (`chat_turn` for conversations, `quickgen` for one-shot generations).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from addons.normalized import Message, Request, TextPart, ToolCallPart, ToolResultPart

Kind = Literal["chat_turn", "compaction", "title_generation", "quickgen", "unknown"]
KINDS: tuple[str, ...] = ("chat_turn", "compaction", "title_generation", "quickgen", "unknown")

# Client-stated kinds (Codex `request_kind`) in our vocabulary.
CLIENT_KINDS = {
    "turn": "chat_turn",
    "chat": "chat_turn",
    "compaction": "compaction",
    "compact": "compaction",
    "title": "title_generation",
    "title_generation": "title_generation",
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


def _texts(message: Message) -> list[str]:
    return [p.text for p in message.parts if isinstance(p, TextPart) and p.text.strip()]


@dataclass
class Facts:
    request: Request
    body: Any
    path: str

    @cached_property
    def conversation(self) -> list[Message]:
        return [m for m in self.request.messages if m.role != "system"]

    @cached_property
    def system(self) -> str:
        inline = [t for m in self.request.messages if m.role == "system" for t in _texts(m)]
        return fold("\n".join([self.request.system or "", *inline]))

    @cached_property
    def user_messages(self) -> list[Message]:
        return [m for m in self.conversation if m.role == "user" and _texts(m)]

    @cached_property
    def first_user(self) -> list[str]:
        return [fold(t) for t in _texts(self.user_messages[0])] if self.user_messages else []

    @cached_property
    def last_user(self) -> list[str]:
        """Texts of the final user message (each block, and all of them joined)."""
        if not self.conversation or self.conversation[-1].role not in ("user", "tool"):
            return []
        texts = [fold(t) for t in _texts(self.conversation[-1])]
        return [*texts, " ".join(texts)] if len(texts) > 1 else texts

    @cached_property
    def tool_names(self) -> set[str]:
        return {t.name for t in self.request.tools}

    @cached_property
    def tool_choice_name(self) -> str | None:
        choice = self.request.tool_choice
        if isinstance(choice, dict):
            name = choice.get("name") or (choice.get("function") or {}).get("name")
            return str(name) if name else None
        return None

    @cached_property
    def max_output_tokens(self) -> int | None:
        value = self.request.options.get("max_output_tokens")
        return value if isinstance(value, int) else None

    @cached_property
    def used_tools(self) -> bool:
        return any(isinstance(p, ToolCallPart | ToolResultPart) for m in self.conversation for p in m.parts)

    @cached_property
    def input_item_types(self) -> set[str]:
        items = self.body.get("input") if isinstance(self.body, dict) else None
        if not isinstance(items, list):
            return set()
        return {str(i.get("type")) for i in items if isinstance(i, dict) and i.get("type")}

    @cached_property
    def history_chars(self) -> int:
        return sum(len(t) for m in self.conversation for t in _texts(m))


# ---- profiles: data-driven rules ---------------------------------------------------------------


class Match(BaseModel):
    """Every condition given must hold. Text conditions ignore case and runs of whitespace."""

    model_config = ConfigDict(extra="forbid")

    system_starts_with: str | None = None
    system_contains: str | None = None
    first_user_starts_with: str | None = None
    last_user_starts_with: str | None = None
    last_user_contains: str | None = None
    any_instruction_contains: str | None = None  # the system prompt or the final user message
    tools_include: str | None = None
    tools_present: bool | None = None
    tool_choice_name: str | None = None
    max_output_tokens_at_most: int | None = None
    model_matches: str | None = None  # a regular expression
    path_ends_with: str | None = None
    input_item_type: str | None = None  # an OpenAI Responses input item type
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
    "max_output_tokens_at_most": lambda f, v: f.max_output_tokens is not None and f.max_output_tokens <= v,
    "model_matches": lambda f, v: re.search(v, f.request.model or "") is not None,
    "path_ends_with": lambda f, v: f.path.endswith(v),
    "input_item_type": lambda f, v: v in f.input_item_types,
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
    rules: list[Rule]


class ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profiles: list[Profile]


def load_profiles(extra: list[Path] | tuple[Path, ...] = ()) -> list[Profile]:
    """The user's profiles first (they win), then the built-in ones."""
    builtin = resources.files("addons").joinpath("profiles/builtin.json").read_bytes()
    files = [path.read_bytes() for path in extra] + [builtin]
    return [p for raw in files for p in ProfileFile.model_validate(orjson.loads(raw)).profiles]


# ---- heuristics ----------------------------------------------------------------------------------

_TITLE_ASK = re.compile(
    r"\b(title|headline|name)\b.{0,80}\b(conversation|chat|message|thread|session|discussion|query|prompt)"
    r"|\b(generate|create|write|suggest|give|produce|come up with)\b.{0,40}\b(title|headline)\b"
    r"|\btitle\b.{0,40}\b(\d\s*-\s*\d|\d+|few|short|concise|brief)\s*(words?|characters?)"
)
_SUMMARY_ASK = re.compile(
    r"\b(summar(y|ise|ize|izing|ising)|compact(ion)?|condense|checkpoint|hand\s?-?over|handoff|recap)\b"
)
_OF_CONVERSATION = re.compile(
    r"\b(conversation|chat|context|session|history|transcript|so far|above|thread|discussion)\b"
)
TITLE_MAX_OUTPUT = 512
COMPACTION_MIN_MESSAGES = 3
COMPACTION_MIN_CHARS = 1500


def heuristic(f: Facts) -> Classification | None:
    instruction = " ".join([f.system, *f.last_user])
    if (
        len(f.conversation) <= 2
        and not f.used_tools
        and (f.max_output_tokens is None or f.max_output_tokens <= TITLE_MAX_OUTPUT)
        and (not f.tool_names or (f.tool_choice_name or "").lower().find("title") >= 0)
        and _TITLE_ASK.search(instruction)
    ):
        return Classification("title_generation", "heuristic", "a short request asking for a title")
    ask = " ".join(t[:600] for t in f.last_user)
    long_history = len(f.conversation) >= COMPACTION_MIN_MESSAGES or f.history_chars >= COMPACTION_MIN_CHARS
    if long_history and _SUMMARY_ASK.search(ask) and _OF_CONVERSATION.search(ask):
        return Classification(
            "compaction", "heuristic", "a long history ending with an instruction to summarise it"
        )
    system = f.system[:600]
    if long_history and not f.tool_names and _SUMMARY_ASK.search(system) and _OF_CONVERSATION.search(system):
        return Classification("compaction", "heuristic", "a system prompt asking to summarise the history")
    return None


def structured_output(body: Any) -> bool:
    """The request asks for JSON rather than prose (OpenAI, Responses, Gemini, Ollama, Anthropic)."""
    if not isinstance(body, dict):
        return False
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return True
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        return text["format"].get("type") in ("json_object", "json_schema")
    config = body.get("generationConfig")
    if isinstance(config, dict) and (config.get("responseSchema") or config.get("responseJsonSchema")):
        return True
    return bool(body.get("format") or body.get("output_format"))


def default(f: Facts) -> Classification:
    one_shot = len(f.conversation) == 1 and (not f.tool_names or f.tool_choice_name is not None)
    if one_shot and (structured_output(f.body) or f.tool_choice_name is not None):
        return Classification("quickgen", "default", "a single prompt asking for structured output")
    return Classification("chat_turn", "default", "a conversational call")


# ---- the classifier -----------------------------------------------------------------------------


def client_metadata(headers: dict[str, str], body: Any) -> Classification | None:
    raw: Any = headers.get("x-codex-turn-metadata")
    source = "x-codex-turn-metadata"
    if raw is None and isinstance(body, dict) and isinstance(body.get("client_metadata"), dict):
        raw, source = body["client_metadata"], "client_metadata"
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    stated = raw.get("request_kind") if isinstance(raw, dict) else None
    kind = CLIENT_KINDS.get(str(stated).lower()) if stated else None
    if kind is None:
        return None
    return Classification(kind, "client_metadata", f"{source} request_kind={stated}")


class Classifier:
    def __init__(self, profile_files: list[Path] | tuple[Path, ...] = ()) -> None:
        self.profiles = load_profiles(profile_files)
        self.rules = [
            (rule.kind, f"{profile.name}: {rule.reason}", conditions)
            for profile in self.profiles
            for rule in profile.rules
            if (conditions := rule.match.compile())
        ]

    def classify(
        self,
        request: Request | None,
        body: Any,
        path: str,
        headers: dict[str, str],
        hints: dict[str, str],
    ) -> Classification:
        stated = hints.get("x-chatdebug-kind", "").strip().lower()
        if stated in KINDS:
            return Classification(stated, "header", f"X-Chatdebug-Kind: {stated}")
        if found := client_metadata(headers, body):
            return found
        if request is None:
            return Classification("unknown", "default", "the request could not be parsed")
        facts = Facts(request, body, path)
        for kind, reason, conditions in self.rules:
            if all(check(facts, value) for check, value in conditions):
                return Classification(kind, "profile", reason)
        return heuristic(facts) or default(facts)
