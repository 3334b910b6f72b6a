"""Datasets: the prompts file read as plain items, in the OpenAI-messages or the ShareGPT format.

Two formats (``[load] prompts_format``; ``auto`` decides from the file's first item: ShareGPT
when it has "conversations", else OpenAI messages):

- ``openai``: one item per line (JSONL), ``{"messages": [{"role", "content"}, ...]}`` or
  ``{"prompt": "..."}``, with an optional output length (``max_tokens``, or ``output_tokens``)
  and ``metadata`` (an object, kept with the item, never sent). A user writes these files, so
  every bad item is an error naming its line.
- ``sharegpt``: the common public conversation dumps, a JSON array (or JSONL) of
  ``{"id", "conversations": [{"from": "human" | "gpt" | "system", "value": "..."}, ...]}``.
  Public dumps hold conversations no request can be made of (no human turn, unknown roles):
  they are skipped and counted (``Dataset.skipped``), and a file with none usable is refused.

Either container works for either format: a file whose first character is ``[`` is a JSON array
(an item's place is its position in the array, from 1), otherwise JSONL (its line, from 1). That
place is the item's ``line``, the record's ``dataset_item``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

# A ShareGPT answer's length in tokens is estimated from its words (no tokenizer here): the same
# ratio the synthetic prompts are sized with, typical for English text with a BPE tokenizer.
WORDS_PER_TOKEN = 0.75

Messages = list[dict[str, Any]]

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "system": "system"}
FORMATS = ("openai", "sharegpt")


class ConfigPromptError(ValueError):
    """The prompts file cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class DatasetItem:
    """One usable item of a prompts file, as plain data.

    ``turns[0]`` is the whole first request (system messages and the first user message);
    ``turns[k]`` is what the user adds at turn k + 1 (only user messages: the caller puts the
    conversation so far before them). ``output_tokens[k]`` is turn k + 1's output length from
    the file (None: the file gives none)."""

    line: int                               # 1-based line (JSONL) or array position
    turns: tuple[Messages, ...]
    output_tokens: tuple[int | None, ...]
    metadata: dict[str, Any] | None = None

    @property
    def first_output_tokens(self) -> int | None:
        return self.output_tokens[0]


@dataclass(frozen=True)
class Dataset:
    """A prompts file's usable items, what format they were read as, and what was skipped."""

    path: str
    format: str                                         # "openai" or "sharegpt"
    items: tuple[DatasetItem, ...]
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> how many items
    first_skipped: dict[str, int] = field(default_factory=dict)  # reason -> its first item's place

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line for the console: how many items, the format, and what was skipped and why."""
        text = f"{len(self.items)} from {self.path} ({self.format}"
        if self.skipped:
            reasons = ", ".join(f"{count} {reason} (first: item {self.first_skipped[reason]})"
                                for reason, count in sorted(self.skipped.items()))
            text += f"; skipped {self.skipped_count} unusable: {reasons}"
        return text + ")"


def answer_tokens(text: str, words_per_token: float = WORDS_PER_TOKEN) -> int:
    """A text's length in tokens, estimated from its words (at least 1)."""
    return max(1, round(len(text.split()) / words_per_token))


def existing_file(path: str | Path, what: str, setting: str,
                  error: type[ConfigPromptError] = ConfigPromptError) -> Path:
    """The path of a file the [load] settings name, or ``error`` saying it is missing or not
    a file (and where a relative path is read from)."""
    p = Path(path)
    if not p.exists():
        raise error(f"{what} {str(p)!r} not found (a relative {setting} is read from the config "
                    "file's folder)")
    if not p.is_file():
        raise error(f"{what} {str(p)!r} is not a file")
    return p


def load_dataset(path: str | Path, prompts_format: str = "auto") -> Dataset:
    """Read a prompts file (``auto``, ``openai`` or ``sharegpt``); ConfigPromptError names the
    file, the line and the fix. Read once per process for an unchanged file (cached)."""
    p = existing_file(path, "prompts file", "prompts_file")
    if prompts_format not in ("auto", *FORMATS):
        raise ConfigPromptError(f"prompts_format = {prompts_format!r}: use auto, openai or "
                                "sharegpt")
    stat = p.stat()
    return _load_cached(str(p.resolve()), str(p), prompts_format, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load_cached(resolved: str, shown: str, prompts_format: str, _mtime_ns: int,
                 _size: int) -> Dataset:
    # the cache key holds the file's mtime and size: an edited file is read again
    entries = list(_entries(Path(resolved), shown))
    if not entries:
        raise ConfigPromptError(f"prompts file {shown}: no prompts in the file (it is empty)")
    fmt = prompts_format if prompts_format != "auto" else _detect(entries[0][1])
    if fmt == "openai":
        items = tuple(_openai_item(shown, place, value) for place, value in entries)
        return Dataset(shown, fmt, items)
    return _sharegpt_dataset(shown, entries)


def _entries(path: Path, shown: str) -> Iterator[tuple[int, Any]]:
    """(place, parsed JSON value) for each item: a JSON array's elements or JSONL's lines."""
    try:
        with open(path, encoding="utf-8-sig") as fh:   # a byte-order mark is no error
            head = fh.read(4096).lstrip()
            fh.seek(0)
            if head.startswith("["):
                try:
                    array = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise ConfigPromptError(
                        f"prompts file {shown}:{exc.lineno}: not JSON ({exc.msg}); a file "
                        "starting with '[' is read as one JSON array of items") from None
                yield from enumerate(array, 1)
                return
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigPromptError(f"prompts file {shown}:{number}: not JSON ({exc.msg}); "
                                            "write one JSON object per line (JSONL), or the "
                                            "whole file as one JSON array") from None
    except UnicodeDecodeError as exc:
        raise ConfigPromptError(f"prompts file {shown}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigPromptError(f"prompts file {shown}: cannot be read ({exc.strerror})") from None


def _detect(value: Any) -> str:
    """``auto``: ShareGPT when the first item has "conversations", else OpenAI messages (whose
    reader names the first item that has neither shape, and mentions the other format)."""
    return "sharegpt" if isinstance(value, dict) and "conversations" in value else "openai"


def _openai_messages(item: dict[str, Any]) -> Messages | None:
    """The chat messages of one OpenAI-format item, or None when it has neither shape."""
    if isinstance(item.get("prompt"), str) and item["prompt"].strip():
        return [{"role": "user", "content": item["prompt"]}]
    messages = item.get("messages")
    if (isinstance(messages, list) and messages
            and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), (str, list)) for m in messages)):
        return messages
    return None


def _openai_item(shown: str, place: int, value: Any) -> DatasetItem:
    where = f"prompts file {shown}:{place}"
    messages = _openai_messages(value) if isinstance(value, dict) else None
    if messages is None:
        raise ConfigPromptError(
            f'{where}: expected {{"prompt": "non-empty text"}} or '
            '{"messages": [{"role": "user", "content": "..."}, ...]} (OpenAI format; '
            'for ShareGPT conversations set prompts_format = "sharegpt")')
    given = [name for name in ("max_tokens", "output_tokens") if name in value]
    if len(given) > 1:
        raise ConfigPromptError(f"{where}: give the output length once, as max_tokens or "
                                "output_tokens, not both")
    length = value[given[0]] if given else None
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)
                               or length < 1):
        raise ConfigPromptError(f"{where}: {given[0]} = {json.dumps(length)}: give a whole "
                                "number of tokens, at least 1 (or leave it out)")
    metadata = value.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ConfigPromptError(f"{where}: metadata must be a JSON object (or left out)")
    return DatasetItem(place, (messages,), (length,), metadata)


def _sharegpt_dataset(shown: str, entries: list[tuple[int, Any]]) -> Dataset:
    items: list[DatasetItem] = []
    skipped: dict[str, int] = {}
    first_skipped: dict[str, int] = {}
    for place, value in entries:
        item = _sharegpt_item(place, value)
        if isinstance(item, DatasetItem):
            items.append(item)
        else:
            skipped[item] = skipped.get(item, 0) + 1
            first_skipped.setdefault(item, place)
    dataset = Dataset(shown, "sharegpt", tuple(items), skipped, first_skipped)
    if not items:
        raise ConfigPromptError(
            f"prompts file {shown}: no usable ShareGPT conversation ({dataset.summary()}); each "
            'item needs "conversations": [{"from": "human", "value": "..."}, ...] (for '
            'OpenAI-messages JSONL set prompts_format = "openai")')
    return dataset


def _sharegpt_item(place: int, value: Any) -> DatasetItem | str:
    """One conversation as an item, or why it is unusable (the reason, counted)."""
    if not isinstance(value, dict) or not isinstance(value.get("conversations"), list):
        return "without a conversations list"
    messages: Messages = []
    for entry in value["conversations"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("from"), str)
                and isinstance(entry.get("value"), str)):
            return 'with a turn that is not {"from": "...", "value": "text"}'
        role = SHAREGPT_ROLES.get(entry["from"].strip().lower())
        if role is None:
            return "with an unknown role"
        if entry["value"].strip():          # an empty turn adds nothing to a request
            messages.append({"role": role, "content": entry["value"]})
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if first_user is None:
        return "without a human turn"
    # the first request: the system turns before the first human turn, then that turn (answers
    # before any question have nothing to answer and are left out)
    first = [m for m in messages[:first_user] if m["role"] == "system"] + [messages[first_user]]
    turns: list[Messages] = [first]
    lengths: list[int | None] = [None]
    for message in messages[first_user + 1:]:
        if message["role"] == "assistant":
            if lengths[-1] is None:         # the first answer to this turn gives its length
                lengths[-1] = answer_tokens(message["content"])
        elif message["role"] == "user":
            if lengths[-1] is None:         # two questions in a row: one turn
                turns[-1].append(message)
            else:
                turns.append([message])
                lengths.append(None)
        # a system turn later in a conversation is left out: later turns add user messages only
    metadata = {"id": value["id"]} if isinstance(value.get("id"), (str, int)) else None
    return DatasetItem(place, tuple(turns), tuple(lengths), metadata)

