"""Prompts: synthetic ones of a target length, varied and seeded, or read from a JSONL file.

Synthetic prompts start with a unique random header, so no two requests share more than the
chat template's prefix and prefix caching cannot flatter one endpoint. The same seed gives the
same sequence of prompts to every endpoint, so A and B answer identical work.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator

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


def synthetic_prompts(seed: int, stream: str, words: int) -> Iterator[Messages]:
    """An endless, reproducible sequence of user messages for one stream (e.g. one user)."""
    rng = random.Random(f"{seed}/{stream}")
    while True:
        yield [{"role": "user", "content": synthetic_prompt(rng, words)}]


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


def file_prompts(prompts: list[Messages], seed: int, stream: str) -> Iterator[Messages]:
    """Cycle through the file's prompts from a seeded starting point for this stream."""
    start = random.Random(f"{seed}/{stream}").randrange(len(prompts))
    index = start
    while True:
        yield prompts[index]
        index = (index + 1) % len(prompts)
