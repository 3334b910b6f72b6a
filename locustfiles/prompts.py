"""Prompts: synthetic ones of a target length, varied and seeded, or a dataset's items
(``locustfiles.datasets``), and the seeded request stream every arm replays.

Synthetic prompts start with a unique random header, so no two requests share more than the
chat template's prefix and prefix caching cannot flatter one endpoint. With prefix sharing
(``prefix_share``, ``prefix_tokens``) a share of the requests begins with one shared system
prompt, placed before that header: only the shared part can hit the prefix cache.

The request stream (``RequestStream``): every request has a key, ``<stage>/<stream>/<n>``, the
n-th request (from 1) that user stream ``<stream>`` sends in stage ``<stage>``. The key alone
decides the request's prompt, whether it begins with the shared prefix and its requested output
length, so within a repetition every endpoint answers the same request for the same key,
whatever its speed: the report pairs the arms request by request on it (paired A/B). In open
loop, the arrival offsets of a stream within a stage come from the same seed too
(``arrival_rng``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locustfiles.datasets import (ConfigPromptError, Dataset, DatasetItem, WORDS_PER_TOKEN,
                                  load_dataset)

__all__ = ["ConfigPromptError", "Dataset", "DatasetItem", "Messages", "PlannedRequest",
           "RequestStream", "WORDS_PER_TOKEN", "arrival_rng", "check_prompts",
           "load_prompts_file", "prompt_words_for", "request_key", "shared_prefix_text",
           "synthetic_prompt"]

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


def prompt_words_for(input_tokens: int, words_per_token: float = WORDS_PER_TOKEN) -> int:
    return max(1, round(input_tokens * words_per_token))


def synthetic_prompt(rng: random.Random, words: int) -> str:
    header = f"Task {rng.getrandbits(48):012x}."
    body = " ".join(rng.choice(_VOCABULARY) for _ in range(max(1, words - 2)))
    return f"{header} {body}"


def shared_prefix_text(seed: int, words: int) -> str:
    """The one shared system prompt: ``words`` words from the seed alone, so it is the same in
    every process, arm and repetition of a config (no unique header: it is meant to be cached)."""
    rng = random.Random(f"{seed}/shared-prefix")
    body = " ".join(rng.choice(_VOCABULARY) for _ in range(max(1, words - 5)))
    return f"You are a helpful assistant. {body}"


def request_key(stage: int, stream: str, n: int) -> str:
    """The request's place in the seeded stream: the same request in every arm."""
    return f"{stage}/{stream}/{n}"


def arrival_rng(seed: int, stage: int, stream: str) -> random.Random:
    """Open loop: the generator of one stream's inter-arrival times in one stage."""
    return random.Random(f"{seed}/arrivals/{stage}/{stream}")


def words_per_token(load: Any) -> float:
    """Words of synthetic prompt per prompt token: as the preflight calibrated it (prompt_words
    for input_tokens) when it did, else the English rule of thumb."""
    return (load.prompt_words / load.input_tokens if load.prompt_words and load.input_tokens
            else WORDS_PER_TOKEN)


@dataclass(frozen=True)
class PlannedRequest:
    """What one key asks for, as plain data: the messages, the requested output length and where
    they came from (the record's dataset_item and shared_prefix columns)."""

    messages: Messages
    output_tokens: int
    dataset_item: int = -1          # the prompts file's line (1-based); -1: synthetic
    shared_prefix: bool = False     # begins with the shared system prompt


def _copy(messages: Messages) -> Messages:
    """A fresh list of fresh message dicts: a dataset is cached per process and shared, and a
    caller may extend what it is given (a conversation's history)."""
    return [dict(m) for m in messages]


@dataclass(frozen=True)
class RequestStream:
    """What a key asks for: its messages and its requested output length (plain, seeded)."""

    seed: int
    words: int                              # synthetic prompts' length
    max_tokens: int
    max_tokens_min: int = 0                 # > 0: lengths drawn from [this, max_tokens]
    items: tuple[DatasetItem, ...] = ()     # a dataset's items (replace synthetic prompts)
    output_dist: str = "request"            # request | lognormal | dataset
    output_median_tokens: int = 0           # lognormal: its median (0: half of max_tokens)
    output_sigma: float = 0.5               # lognormal: its shape
    prefix_share: float = 0.0               # share of keys that begin with the shared prefix
    prefix_words: int = 0                   # the shared prefix's length in words
    _prefix: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prefix_share > 0 and self.prefix_words > 0:
            object.__setattr__(self, "_prefix", shared_prefix_text(self.seed, self.prefix_words))

    @classmethod
    def from_settings(cls, load: Any, max_tokens: int, max_tokens_min: int = 0,
                      dataset: Dataset | None = None) -> "RequestStream":
        """The stream of a config's ``[load]`` settings and an endpoint's output limits. The
        shared prefix is sized with the words-per-token of the synthetic prompts (calibrated
        by the preflight when it set prompt_words)."""
        words = load.prompt_words or prompt_words_for(load.input_tokens)
        return cls(seed=load.prompt_seed, words=words, max_tokens=max_tokens,
                   max_tokens_min=max_tokens_min, items=dataset.items if dataset else (),
                   output_dist=load.output_dist, output_median_tokens=load.output_median_tokens,
                   output_sigma=load.output_sigma, prefix_share=load.prefix_share,
                   prefix_words=prompt_words_for(load.prefix_tokens, words_per_token(load))
                   if load.prefix_tokens else 0)

    @property
    def shared_prefix(self) -> str:
        """The shared system prompt's text ("" without prefix sharing)."""
        return self._prefix

    def plan(self, key: str) -> PlannedRequest:
        """Everything the request of ``key`` asks for (the same in every arm)."""
        item = self.item(key)
        if item is None:
            rng = random.Random(f"{self.seed}/prompt/{key}")
            messages = [{"role": "user", "content": synthetic_prompt(rng, self.words)}]
            line = -1
        else:
            messages, line = _copy(item.turns[0]), item.line
        shared = self.begins_with_prefix(key)
        if shared:
            messages = self._with_prefix(messages)
        return PlannedRequest(messages, self.output_tokens(key, item), line, shared)

    def turn(self, session: str, turn: int) -> PlannedRequest:
        """Turn ``turn`` (from 1) of the conversation ``session`` (its first turn's key). Turn 1
        is a whole first request; a later turn's messages are only what the user adds (the
        caller puts the history, answers included, before them).

        With a dataset, a later turn is the conversation's own k-th user turn when it has one
        (a ShareGPT conversation continues in its own words, with its own answer's length under
        output_dist = "dataset"); past its end, the last user message of another item, picked
        by the turn's key. Without a dataset, a fresh synthetic user message."""
        if turn <= 1:
            return self.plan(session)
        key = f"{session}/turn{turn}"
        item = self.item(session)
        if item is not None and len(item.turns) >= turn:
            own = item.output_tokens[turn - 1]
            return PlannedRequest(_copy(item.turns[turn - 1]),
                                  self.output_tokens(key, item, own), item.line, False)
        later = self.plan(key)
        users = [m for m in later.messages if m.get("role") == "user"]
        return PlannedRequest(users[-1:] or later.messages[-1:], later.output_tokens,
                              later.dataset_item, False)

    def item(self, key: str) -> DatasetItem | None:
        """The dataset item of ``key`` (None: synthetic prompts), picked by the key."""
        if not self.items:
            return None
        return self.items[random.Random(f"{self.seed}/file/{key}").randrange(len(self.items))]

    def messages(self, key: str) -> Messages:
        """The messages of ``key``'s request (``plan(key).messages``)."""
        return self.plan(key).messages

    def begins_with_prefix(self, key: str) -> bool:
        """Whether ``key``'s request begins with the shared prefix (drawn per key)."""
        if not self._prefix:
            return False
        return random.Random(f"{self.seed}/prefix/{key}").random() < self.prefix_share

    def _with_prefix(self, messages: Messages) -> Messages:
        """The shared system prompt first. An item's own leading system message (text) follows
        it in the same message, since some chat templates accept one system message only."""
        first = messages[0] if messages else {}
        if first.get("role") == "system" and isinstance(first.get("content"), str):
            joined = {**first, "content": f"{self._prefix}\n\n{first['content']}"}
            return [joined, *messages[1:]]
        return [{"role": "system", "content": self._prefix}, *messages]

    def output_tokens(self, key: str, item: DatasetItem | None = None,
                      own: int | None = None) -> int:
        """The requested output length of ``key`` (``item``: its dataset item, whose first
        answer's length ``output_dist = "dataset"`` uses unless ``own`` gives another)."""
        if self.output_dist == "dataset":
            length = own if own is not None else (item.first_output_tokens if item else None)
            if length is not None:
                return max(1, min(length, self.max_tokens))
        elif self.output_dist == "lognormal":
            median = self.output_median_tokens or max(1, self.max_tokens // 2)
            draw = random.Random(f"{self.seed}/length/{key}").gauss(0.0, self.output_sigma)
            low = max(1, self.max_tokens_min)
            return min(self.max_tokens, max(low, round(median * math.exp(draw))))
        if self.max_tokens_min:
            return random.Random(f"{self.seed}/length/{key}").randint(self.max_tokens_min,
                                                                       self.max_tokens)
        return self.max_tokens


def load_prompts_file(path: str | Path, prompts_format: str = "auto") -> list[Messages]:
    """Each usable item's first request (its messages), from a prompts file in either format
    (``locustfiles.datasets``). Every problem names the file (and line) and what to change; the
    campaign and Locust check the file this way before any load starts."""
    return [_copy(item.turns[0]) for item in load_dataset(path, prompts_format).items]


def check_prompts(prompts_file: str, prompts_format: str = "auto") -> Dataset | None:
    """The configured prompts file read and checked (None without one); ConfigPromptError if
    unusable. ``Dataset.summary()`` says what was read and what was skipped."""
    return load_dataset(prompts_file, prompts_format) if prompts_file else None
