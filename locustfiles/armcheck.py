"""Arm equivalence: are the endpoints (arms) of a paired A/B comparison given comparable work?

Paired A/B replays one seeded request stream to every arm, so a difference between the arms
means something only if the same request costs the same work on each. Before any load the
campaign's preflight sends every endpoint the same few probes (``locustfiles.preflight``:
``probe_arm``) and this module compares what came back, without any network:

- tokenization: the same prompts must count about the same ``usage.prompt_tokens`` on every arm
  (chat templates differ by a few tokens: ``TOKEN_TOLERANCE_TOKENS`` or
  ``TOKEN_TOLERANCE_RELATIVE`` of the reference arm's count, whichever is larger);
- output length: a request for ``OUTPUT_PROBE_TOKENS`` tokens (with ``ignore_eos`` where the
  config sends it) must generate exactly that many on every arm;
- the request settings of the arms (``[request]``) must agree.

The reference arm is the first endpoint that reported usage (the config's first, usually).
``compare_arms`` names every difference (``ArmDifference``); ``arm_check_record`` is the plain
data the campaign writes under ``preflight`` in ``campaign.json``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from typing import Any

from core.config import Endpoint
from locustfiles.prompts import synthetic_prompt

TOKEN_TOLERANCE_TOKENS = 8        # prompt tokens: chat templates differ by a few ...
TOKEN_TOLERANCE_RELATIVE = 0.05   # ... or 5% of the reference count, whichever is larger
OUTPUT_PROBE_TOKENS = 24          # output tokens asked for by the output-length probe
PROBE_WORDS = (16, 96, 384)       # synthetic probe prompts: about 20, 130 and 510 tokens
PROBE_SEED = "armcheck"           # fixed: every arm, every campaign gets the same probes
FILE_PROBES = 2                   # a prompts file's first prompts probed as well
WARM_OUTPUT_TOKENS = 16           # --warm-cache: output tokens per warm-up request (short)

Messages = list[dict[str, Any]]

CACHE_STATEMENT = ("synthetic prompts begin with a unique random header, so no two requests "
                   "share more than the chat template's prefix: every request is a fresh "
                   "prefix (prefix caching cannot flatter one arm)")
FILE_CACHE_STATEMENT = "a prompts file: its prompts repeat, so the cache warms as the load goes"


def cache_prefix_kind(load: Any) -> str:
    """campaign.json's preflight.cache.prefix: what the requests' prefixes are."""
    kind = "prompts file" if load.prompts_file else "fresh per request"
    if load.prefix_share > 0 and load.prefix_tokens:
        kind += f"; shared prefix on {load.prefix_share:.0%}"
    return kind


def cache_statement(load: Any) -> str:
    """How prefix caching meets the load's prompts, in words (the preflight's cache line)."""
    statement = FILE_CACHE_STATEMENT if load.prompts_file else CACHE_STATEMENT
    if load.prefix_share > 0 and load.prefix_tokens:
        statement += (f"; but {load.prefix_share:.0%} of requests (drawn per request key, the "
                      f"same on every arm) begin with one shared system prompt of about "
                      f"{load.prefix_tokens} tokens, which every arm can cache after its first "
                      "such request (prefix_share)")
    return statement


def tolerance(reference: int) -> int:
    """The largest prompt-token difference from the reference count still taken as equal."""
    return max(TOKEN_TOLERANCE_TOKENS, int(TOKEN_TOLERANCE_RELATIVE * reference))


def tolerance_text() -> str:
    return (f"{TOKEN_TOLERANCE_RELATIVE:.0%} or {TOKEN_TOLERANCE_TOKENS} tokens, "
            "whichever is larger")


@dataclass(frozen=True)
class ProbePrompt:
    name: str           # how the warning names it: "synthetic 96 words", "prompts file #1"
    messages: Messages


def probe_prompts(file_prompts: list[Messages] | tuple = ()) -> list[ProbePrompt]:
    """The tokenization probes: synthetic prompts of ``PROBE_WORDS`` lengths from a fixed seed,
    then a prompts file's first ``FILE_PROBES`` prompts."""
    rng = random.Random(PROBE_SEED)
    probes = [ProbePrompt(f"synthetic {words} words",
                          [{"role": "user", "content": synthetic_prompt(rng, words)}])
              for words in PROBE_WORDS]
    probes += [ProbePrompt(f"prompts file #{i + 1}", list(messages))
               for i, messages in enumerate(list(file_prompts)[:FILE_PROBES])]
    return probes


def output_probe() -> Messages:
    """The output-length probe's prompt (short, fixed)."""
    return [{"role": "user", "content": synthetic_prompt(random.Random(f"{PROBE_SEED}/output"),
                                                         12)}]


def warm_prompts(seed: int, words: int, count: int,
                 file_prompts: list[Messages] | tuple = ()) -> list[Messages]:
    """The ``--warm-cache`` pass, the same on every arm: a prompts file's first ``count`` prompts
    (cycled), else ``count`` synthetic prompts of the load's size from the config's prompt_seed
    (keyed ``warm-cache``: they warm the template prefix and the engine, not the load's own
    prompts, which keep their fresh headers)."""
    if file_prompts:
        prompts = list(file_prompts)
        return [list(prompts[i % len(prompts)]) for i in range(count)]
    return [[{"role": "user",
              "content": synthetic_prompt(random.Random(f"{seed}/warm-cache/{i}"), words)}]
            for i in range(count)]


@dataclass
class ArmProbe:
    """What one endpoint answered to the probes (filled by ``preflight.probe_arm``)."""

    label: str
    prompt_tokens: dict[str, int | None] = field(default_factory=dict)  # probe name -> usage
    output_requested: int = OUTPUT_PROBE_TOKENS
    output_tokens: int | None = None      # usage.completion_tokens, else counted chunks
    output_counted: str = "usage"         # "usage" or "chunks" (no usage in the answer)
    finish_reason: str | None = None
    ignore_eos: bool | None = None        # the output probe's ignore_eos (None: not sent)
    errors: list[str] = field(default_factory=list)  # probes that failed, described

    @property
    def usage(self) -> bool:
        """Whether the endpoint reported prompt tokens (on any probe)."""
        return any(v is not None for v in self.prompt_tokens.values())


@dataclass(frozen=True)
class ArmDifference:
    """One way the arms are not equivalent, named for the warning and campaign.json."""

    kind: str                 # tokenization | tokenization_unknown | output_length |
    #                           request_settings | probe_failed | warm_cache
    endpoint: str             # the arm that differs
    message: str              # one line, with the figures
    prompt: str = ""          # tokenization: the probe prompt
    reference: str = ""       # the arm it is compared with
    value: int | None = None
    expected: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tokenization(probes: list[ArmProbe]) -> list[ArmDifference]:
    out = []
    for p in probes:
        if len(probes) > 1 and not p.usage and not p.errors:
            out.append(ArmDifference(
                "tokenization_unknown", p.label,
                f"{p.label}: no usage in its answers: tokenization cannot be compared"))
    ref = next((p for p in probes if p.usage), None)
    if ref is None:
        return out
    for name, expected in ref.prompt_tokens.items():
        if expected is None:
            continue
        allowed = tolerance(expected)
        for p in probes:
            value = p.prompt_tokens.get(name)
            if p is ref or value is None or abs(value - expected) <= allowed:
                continue
            diff = value - expected
            out.append(ArmDifference(
                "tokenization", p.label,
                f"{p.label}: prompt {name!r} counts {value} prompt tokens, {ref.label} "
                f"{expected} ({diff:+d}, {diff / max(expected, 1):+.0%}; tolerance "
                f"{allowed})", prompt=name, reference=ref.label, value=value, expected=expected))
    return out


def _output_length(probes: list[ArmProbe]) -> list[ArmDifference]:
    out = []
    for p in probes:
        if p.output_tokens is None or p.output_tokens == p.output_requested:
            continue
        how = ("usage.completion_tokens" if p.output_counted == "usage"
               else "counted chunks; a server that puts several tokens in a chunk shows fewer")
        why = ("stops early" if p.output_tokens < p.output_requested
               else "generates more than asked")
        detail = [how]
        if p.finish_reason:
            detail.append(f"finish_reason {p.finish_reason}")
        detail.append("ignore_eos sent" if p.ignore_eos
                      else "ignore_eos NOT sent ([request] ignore_eos is off)"
                      if p.ignore_eos is None else f"ignore_eos sent as {json.dumps(p.ignore_eos)}")
        out.append(ArmDifference(
            "output_length", p.label,
            f"{p.label}: generated {p.output_tokens} of the {p.output_requested} output tokens "
            f"asked ({'; '.join(detail)}): it {why} (no ignore_eos support, or EOS)",
            value=p.output_tokens, expected=p.output_requested))
    return out


def _failures(probes: list[ArmProbe]) -> list[ArmDifference]:
    return [ArmDifference("probe_failed", p.label, f"{p.label}: a probe failed: {error}")
            for p in probes for error in p.errors]


def compare_arms(probes: list[ArmProbe]) -> list[ArmDifference]:
    """Every difference between the arms' answers to the same probes (empty: equivalent)."""
    return _failures(probes) + _tokenization(probes) + _output_length(probes)


def compare_settings(endpoints: list[Endpoint] | tuple[Endpoint, ...]) -> list[ArmDifference]:
    """The arms' request settings ([request]) that differ from the first endpoint's."""
    if not endpoints:
        return []
    ref = endpoints[0]
    out = []
    for ep in endpoints[1:]:
        for f in dataclasses.fields(ep.request):
            mine, theirs = getattr(ep.request, f.name), getattr(ref.request, f.name)
            if mine != theirs:
                out.append(ArmDifference(
                    "request_settings", ep.label,
                    f"{ep.label}: [request] {f.name} = {mine!r}, {ref.label} has {theirs!r}",
                    reference=ref.label))
    return out


def warning_lines(differences: list[ArmDifference]) -> list[str]:
    """The campaign's warning, one line per difference, then what it means."""
    if not differences:
        return []
    lines = ["WARNING: the arms are not equivalent (or cannot be shown to be): the paired "
             "comparison may be of unequal requests:"]
    lines += [f"  - {d.kind.replace('_', ' ')}: {d.message}" for d in differences]
    kinds = {d.kind for d in differences}
    if "output_length" in kinds:
        lines.append("  an arm that stops early generates less: the arms then do different "
                     "amounts of work for the same request, so their latencies and throughputs "
                     "compare unequal requests (set ignore_eos where the server supports it)")
    if "tokenization" in kinds:
        lines.append("  prompt lengths differ: the arms tokenize (or template) the same prompt "
                     "differently, so the same request is a different prefill on each")
    return lines


def arm_check_record(probes: list[ArmProbe], prompts: list[ProbePrompt],
                     differences: list[ArmDifference]) -> dict[str, Any]:
    """The arm check as plain data (campaign.json's ``preflight.arm_check``)."""
    return {
        "tolerance": {"tokens": TOKEN_TOLERANCE_TOKENS, "relative": TOKEN_TOLERANCE_RELATIVE},
        "prompts": [{"name": pp.name,
                     "prompt_tokens": {p.label: p.prompt_tokens.get(pp.name) for p in probes}}
                    for pp in prompts],
        "output": {"requested": OUTPUT_PROBE_TOKENS,
                   "tokens": {p.label: p.output_tokens for p in probes},
                   "counted": {p.label: p.output_counted for p in probes},
                   "finish_reason": {p.label: p.finish_reason for p in probes},
                   "ignore_eos": {p.label: p.ignore_eos for p in probes}},
        "differences": [d.to_dict() for d in differences],
        "equivalent": not differences,
    }
