"""Prompts: synthetic ones of a target length, varied and seeded, or read from a JSONL file,
and the seeded request stream every arm replays.

Synthetic prompts start with a unique random header, so no two requests share more than the
chat template's prefix and prefix caching cannot flatter one endpoint.

The request stream (``RequestStream``): every request has a key, ``<stage>/<stream>/<n>``, the
n-th request (from 1) that user stream ``<stream>`` sends in stage ``<stage>``. The key alone
decides the request's prompt and its requested output length, so within a repetition every
endpoint answers the same request for the same key, whatever its speed: the report pairs the
arms request by request on it (paired A/B). In open loop, the arrival offsets of a stream within
a stage come from the same seed too (``arrival_rng``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from dataclasses import dataclass
from typing import Any

WORDS_PER_TOKEN = 0.75  # typical for English with a BPE tokenizer; preflight can calibrate it

_VOCABULARY = (
    "system network model request latency memory cache batch token stream server client "
    "engine budget review plan garden river mountain city market history science music "
    "language design energy signal window record method result table figure measure value "
    "report error question answer reason summary detail example story process project team "
    "market policy travel weather kitchen library museum planet ocean forest desert bridge "
    "engineer teacher doctor student artist farmer pilot sailor writer painter builder "
    "quickly carefully rarely often always gently simply clearly slowly briefly openly "
    "compare explain describe analyse improve measure predict consider imagine translate "
    "ancient modern simple complex bright quiet heavy light rapid steady careful honest"
).split()

Messages = list[dict[str, Any]]


class ConfigPromptError(ValueError):
    """The prompts file cannot be used; the message says what to fix."""


def prompt_words_for(input_tokens: int, words_per_token: float = WORDS_PER_TOKEN) -> int:
    return max(1, round(input_tokens * words_per_token))


def synthetic_prompt(rng: random.Random, words: int) -> str:
    header = f"Task {rng.getrandbits(48):012x}."
    body = " ".join(rng.choice(_VOCABULARY) for _ in range(max(1, words - 2)))
    return f"{header} {body}"


def request_key(stage: int, stream: str, n: int) -> str:
    """The request's place in the seeded stream: the same request in every arm."""
    return f"{stage}/{stream}/{n}"


def arrival_rng(seed: int, stage: int, stream: str) -> random.Random:
    """Open loop: the generator of one stream's inter-arrival times in one stage."""
    return random.Random(f"{seed}/arrivals/{stage}/{stream}")


@dataclass(frozen=True)
class PlannedRequest:
    """What one key asks for, as plain data: the messages, the requested output length and where
    they came from (the record's dataset_item and shared_prefix columns)."""

    messages: Messages
    output_tokens: int
    dataset_item: int = -1          # the prompts file's line (1-based); -1: synthetic
    shared_prefix: bool = False     # begins with the shared system prompt


@dataclass(frozen=True)
class RequestStream:
    """What a key asks for: its messages and its requested output length (plain, seeded)."""

    seed: int
    words: int                              # synthetic prompts' length
    max_tokens: int
    max_tokens_min: int = 0                 # > 0: lengths drawn from [this, max_tokens]
    file_prompts: tuple = ()                # a prompts file's prompts (replace synthetic ones)

    def plan(self, key: str) -> PlannedRequest:
        """Everything the request of ``key`` asks for (the same in every arm)."""
        return PlannedRequest(self.messages(key), self.output_tokens(key))

    def turn(self, session: str, turn: int) -> PlannedRequest:
        """Turn ``turn`` (from 1) of the conversation ``session`` (its first turn's key). Turn 1
        is a whole first request; a later turn's messages are only what the user adds (the
        caller puts the history, answers included, before them)."""
        if turn == 1:
            return self.plan(session)
        later = self.plan(f"{session}/turn{turn}")
        users = [m for m in later.messages if m.get("role") == "user"]
        return PlannedRequest(users[-1:] or later.messages[-1:], later.output_tokens,
                              later.dataset_item, False)

    def messages(self, key: str) -> Messages:
        if self.file_prompts:
            index = random.Random(f"{self.seed}/file/{key}").randrange(len(self.file_prompts))
            return self.file_prompts[index]
        rng = random.Random(f"{self.seed}/prompt/{key}")
        return [{"role": "user", "content": synthetic_prompt(rng, self.words)}]

    def output_tokens(self, key: str) -> int:
        if self.max_tokens_min:
            return random.Random(f"{self.seed}/length/{key}").randint(self.max_tokens_min,
                                                                       self.max_tokens)
        return self.max_tokens


def _messages(item: Any) -> Messages | None:
    """The chat messages of one JSONL item, or None when it has neither accepted shape."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("prompt"), str) and item["prompt"].strip():
        return [{"role": "user", "content": item["prompt"]}]
    messages = item.get("messages")
    if (isinstance(messages, list) and messages
            and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), (str, list)) for m in messages)):
        return messages
    return None


def load_prompts_file(path: str | Path) -> list[Messages]:
    """Read a JSONL file: each line {"prompt": "..."} or {"messages": [{"role", "content"}...]}.

    Every problem names the file (and line) and what to change; the campaign and Locust check
    the file this way before any load starts.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigPromptError(f"prompts file {str(p)!r} not found (a relative prompts_file is "
                                "read from the config file's folder)")
    if not p.is_file():
        raise ConfigPromptError(f"prompts file {str(p)!r} is not a file")
    prompts: list[Messages] = []
    try:
        with open(p, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigPromptError(f"prompts file {p}:{number}: not JSON ({exc.msg}); "
                                            "write one JSON object per line (JSONL)") from None
                messages = _messages(item)
                if messages is None:
                    raise ConfigPromptError(
                        f'prompts file {p}:{number}: expected {{"prompt": "non-empty text"}} or '
                        '{"messages": [{"role": "user", "content": "..."}, ...]}')
                prompts.append(messages)
    except UnicodeDecodeError as exc:
        raise ConfigPromptError(f"prompts file {p}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigPromptError(f"prompts file {p}: cannot be read ({exc.strerror})") from None
    if not prompts:
        raise ConfigPromptError(f"prompts file {p}: no prompts in the file (it is empty)")
    return prompts


def check_prompts(prompts_file: str) -> int:
    """How many prompts the configured file holds (0 without one); ConfigPromptError if unusable."""
    return len(load_prompts_file(prompts_file)) if prompts_file else 0
