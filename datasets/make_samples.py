"""Write the shipped sample datasets: small, SYNTHETIC, seeded (the same bytes on every machine).

    python datasets/make_samples.py           # (re)writes the two samples next to this script
    python datasets/make_samples.py --check   # exit 1 when a shipped sample differs

- ``sharegpt-sample.json``: ShareGPT-style conversations (a JSON array of ``{"id",
  "conversations": [{"from", "value"}]}``) of varied lengths, some multi-turn, some with a
  system turn, and two unusable ones (no human turn; an unknown role), as public dumps have, so
  the reader's skipped count shows.
- ``openai-sample.jsonl``: OpenAI-messages items, one per line: ``{"prompt"}`` or
  ``{"messages"}``, some with ``max_tokens`` and ``metadata``.

The text is generated from a small vocabulary: it has the shape of real traffic (lengths, turns,
roles), not its meaning. Nothing here is downloaded; for a real dataset see docs/workloads.md.
Standard library only, so it runs without the project's environment.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261203
SHAREGPT_FILE = "sharegpt-sample.json"
OPENAI_FILE = "openai-sample.jsonl"

_TOPICS = ("a bridge", "the river delta", "a city budget", "a kitchen garden", "the museum",
           "a sailing trip", "a small library", "the weather station", "a desert road",
           "a music school", "a mountain railway", "the market hall", "a forest trail")
_VERBS = ("Explain", "Describe", "Compare", "Summarise", "Plan", "Review", "List the steps of")
_WORDS = ("the", "a", "and", "of", "to", "in", "with", "for", "is", "are", "it", "that", "on",
          "system", "plan", "budget", "river", "design", "energy", "record", "measure", "value",
          "question", "answer", "reason", "detail", "example", "process", "team", "travel",
          "weather", "library", "planet", "ocean", "forest", "teacher", "student", "builder",
          "carefully", "often", "clearly", "slowly", "modern", "simple", "quiet", "steady")
_SYSTEMS = ("You are a careful assistant who answers briefly.",
            "You are a travel guide. Answer in plain words.",
            "You are a patient teacher for a beginner.")


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(max(3, words)))
    return text[0].upper() + text[1:] + "."


def _text(rng: random.Random, words: int) -> str:
    """About ``words`` words, in sentences of 6-18."""
    parts, left = [], words
    while left > 0:
        n = min(left, rng.randint(6, 18))
        parts.append(_sentence(rng, n))
        left -= n
    return " ".join(parts)


def _lognormal_words(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(median * math.exp(rng.gauss(0.0, sigma)))))


def _question(rng: random.Random) -> str:
    head = f"{rng.choice(_VERBS)} {rng.choice(_TOPICS)}."
    return f"{head} {_text(rng, _lognormal_words(rng, 30, 0.9, 4, 300))}"


def sharegpt_sample(rng: random.Random, count: int = 40) -> list[dict]:
    conversations = []
    for i in range(count):
        turns = []
        if rng.random() < 0.25:
            turns.append({"from": "system", "value": rng.choice(_SYSTEMS)})
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            turns.append({"from": "human", "value": _question(rng)})
            answer = _text(rng, _lognormal_words(rng, 80, 0.8, 5, 500))
            turns.append({"from": "gpt", "value": answer})
        conversations.append({"id": f"synthetic-{i + 1:03d}", "conversations": turns})
    # unusable, as public dumps have some: counted and skipped by the reader
    conversations.insert(7, {"id": "synthetic-no-human", "conversations": [
        {"from": "gpt", "value": "An answer with no question before it."}]})
    conversations.insert(23, {"id": "synthetic-unknown-role", "conversations": [
        {"from": "narrator", "value": "A role no chat API has."},
        {"from": "human", "value": "Explain a bridge."}]})
    return conversations


def openai_sample(rng: random.Random, count: int = 30) -> list[dict]:
    items = []
    for i in range(count):
        if rng.random() < 0.4:
            item: dict = {"prompt": _question(rng)}
        else:
            messages = []
            if rng.random() < 0.5:
                messages.append({"role": "system", "content": rng.choice(_SYSTEMS)})
            messages.append({"role": "user", "content": _question(rng)})
            item = {"messages": messages}
        if rng.random() < 0.6:
            item["max_tokens"] = _lognormal_words(rng, 96, 0.7, 8, 512)
        if rng.random() < 0.5:
            item["metadata"] = {"source": "synthetic", "n": i + 1}
        items.append(item)
    return items


def render() -> dict[str, str]:
    """File name -> the exact text of each sample (one seed for both)."""
    rng = random.Random(SEED)
    sharegpt = json.dumps(sharegpt_sample(rng), indent=1, ensure_ascii=False) + "\n"
    openai = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in openai_sample(rng))
    return {SHAREGPT_FILE: sharegpt, OPENAI_FILE: openai}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare the shipped samples with the generator's output")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({len(text.encode())} bytes)")
    if stale:
        print(f"stale: {', '.join(stale)}: run python datasets/make_samples.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
