"""Check each endpoint before any load, with the openai SDK, and say exactly what is wrong.

Per endpoint: the models list answers and serves the configured model; one short streamed
chat returns tokens; whether usage and reasoning come back; and how many prompt tokens a
synthetic prompt word costs there (to size prompts to the target input length).

Across endpoints (``probe_arm``, compared by ``locustfiles.armcheck``): the same prompts'
prompt tokens and whether a fixed output length is honoured; ``warm_cache`` sends the optional
warm-up pass (``--warm-cache N``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from core import secrets
from core.config import Endpoint
from locustfiles.armcheck import (OUTPUT_PROBE_TOKENS, WARM_OUTPUT_TOKENS, ArmProbe,
                                  ProbePrompt, output_probe)
from locustfiles.clients import chat_body
from locustfiles.openaiclient import sdk_body_start, sdk_error_text
from locustfiles.prompts import WORDS_PER_TOKEN, synthetic_prompt
from locustfiles.stream import is_event_stream, not_event_stream, reasoning_of


class PreflightError(RuntimeError):
    """An endpoint cannot be load-tested; the message names it and what to do."""


@dataclass
class PreflightResult:
    label: str
    models: list[str] = field(default_factory=list)
    streamed_chunks: int = 0
    usage: bool = False
    reasoning: bool = False
    tokens_per_word: float | None = None
    template_tokens: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.streamed_chunks} chunks streamed",
                 "usage: yes" if self.usage else "usage: NO (token counts from chunks)",
                 "reasoning: yes" if self.reasoning else "reasoning: no"]
        if self.tokens_per_word:
            parts.append(f"{self.tokens_per_word:.2f} prompt tokens/word")
        return ", ".join(parts)


def _request_url(exc: Any, ep: Endpoint) -> str:
    """The URL the failed request went to (base_url when the SDK does not say)."""
    try:
        return str(exc.request.url)
    except Exception:  # noqa: BLE001 - only for the message
        return ep.base_url


def _describe(exc: Exception, ep: Endpoint) -> str:
    import openai

    where = f"endpoint {ep.label!r} ({ep.base_url})"
    if isinstance(exc, openai.AuthenticationError) or isinstance(exc, openai.PermissionDeniedError):
        if ep.api_key_env and not ep.api_key():
            hint = f"${ep.api_key_env} is not set: export the key in it"
        elif ep.api_key_env:
            hint = f"check the key in ${ep.api_key_env}"
        else:
            hint = "set api_key_env in the endpoints file and export the key in that variable"
        return f"{where}: the server refused the API key (HTTP {exc.status_code}); {hint}"
    if isinstance(exc, openai.NotFoundError):
        return (f"endpoint {ep.label!r}: HTTP 404 from {_request_url(exc, ep)} "
                f"({sdk_error_text(exc)}); check base_url (it usually ends in /v1) "
                "and the model name")
    if isinstance(exc, openai.APIStatusError):
        # the status and what the server said: the JSON error's message, or the start of an
        # HTML page (a proxy's 502/503) without its tags; the SDK's message has neither
        return (f"endpoint {ep.label!r}: HTTP {exc.status_code} from {_request_url(exc, ep)}: "
                f"{sdk_error_text(exc)}")
    if isinstance(exc, openai.APITimeoutError):
        return f"{where}: timed out; is the server overloaded or still starting?"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        text = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        if "refused" in text.lower():
            return (f"{where}: connection refused: nothing listens there; start the server "
                    "or fix base_url")
        return f"{where}: cannot connect ({text}); check base_url and that the server runs"
    if isinstance(exc, openai.APIError):
        return f"{where}: the server's stream carried an error: {exc.message}"
    return f"{where}: {type(exc).__name__}: {exc}"


def _stream(client: Any, ep: Endpoint, text: str, max_tokens: int) -> dict[str, Any]:
    return _stream_messages(client, ep, [{"role": "user", "content": text}], max_tokens)


def _stream_messages(client: Any, ep: Endpoint, messages: list[dict[str, Any]],
                     max_tokens: int) -> dict[str, Any]:
    """One streamed chat with the load's body (extra_body, ignore_eos): what came back."""
    body = chat_body(ep, messages)
    body["max_tokens"] = max_tokens
    known = ("model", "messages", "stream", "stream_options", "max_tokens", "temperature")
    extra = {k: v for k, v in body.items() if k not in known}
    stream = client.chat.completions.create(**{k: body[k] for k in known}, extra_body=extra)
    response = stream.response
    content_type = response.headers.get("content-type")
    if not is_event_stream(content_type):
        failure = not_event_stream(content_type, sdk_body_start(response), response.status_code)
        raise PreflightError(f"endpoint {ep.label!r}: {response.url} did not answer the streamed "
                             f"chat with a server-sent event stream: {failure.message}")
    seen = {"chunks": 0, "reasoning": False, "usage": None, "finish_reason": None,
            "ignore_eos": body.get("ignore_eos")}
    for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].finish_reason:
                seen["finish_reason"] = chunk.choices[0].finish_reason
            delta = chunk.choices[0].delta
            reasoning = reasoning_of(delta)
            if delta.content or reasoning:
                seen["chunks"] += 1
            if reasoning:
                seen["reasoning"] = True
        if chunk.usage is not None:
            seen["usage"] = chunk.usage
    return seen


def check_endpoint(ep: Endpoint, timeout_s: float = 30.0) -> PreflightResult:
    """Raise PreflightError with a clear message, or return what the endpoint supports."""
    import openai

    result = PreflightResult(ep.label)
    keys = [ep.api_key()] if ep.api_key() else []
    client = openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key() or "EMPTY", max_retries=0,
                           timeout=openai.Timeout(timeout_s, connect=min(timeout_s, 10.0)))
    try:
        try:
            result.models = [m.id for m in client.models.list()]
        except Exception as exc:
            raise PreflightError(secrets.scrub(_describe(exc, ep), keys)) from None
        if ep.model not in result.models:
            raise PreflightError(f"endpoint {ep.label!r}: model {ep.model!r} is not served there; "
                                 f"it serves: {', '.join(result.models) or '(none)'}")
        rng = random.Random(0)
        short_words, long_words = 8, 48
        try:
            short = _stream(client, ep, synthetic_prompt(rng, short_words), 8)
            long = _stream(client, ep, synthetic_prompt(rng, long_words), 1)
        except PreflightError as exc:
            raise PreflightError(secrets.scrub(str(exc), keys)) from None
        except Exception as exc:
            raise PreflightError(secrets.scrub(_describe(exc, ep), keys)) from None
        result.streamed_chunks = short["chunks"]
        if short["chunks"] == 0:
            raise PreflightError(f"endpoint {ep.label!r}: the streamed chat returned no tokens; "
                                 "is it an OpenAI-compatible chat server that streams?")
        result.reasoning = bool(short["reasoning"])
        result.usage = short["usage"] is not None
        if result.usage and long["usage"] is not None:
            slope = (long["usage"].prompt_tokens - short["usage"].prompt_tokens) / (
                long_words - short_words)
            if slope > 0:
                result.tokens_per_word = slope
                result.template_tokens = short["usage"].prompt_tokens - slope * short_words
        if not result.usage:
            result.notes.append("no usage in the stream: output tokens will be counted from "
                                "chunks and the report will say so")
    finally:
        client.close()
    return result


def _client(ep: Endpoint, timeout_s: float) -> Any:
    import openai

    return openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key() or "EMPTY", max_retries=0,
                         timeout=openai.Timeout(timeout_s, connect=min(timeout_s, 10.0)))


def _request_failures() -> tuple[type[BaseException], ...]:
    """What a probe or warm-up request can fail with (anything else, such as the campaign's
    Interrupted on SIGINT/SIGTERM, goes up)."""
    import openai

    return (openai.OpenAIError, PreflightError, OSError, ValueError)


def _failure(exc: Exception, ep: Endpoint) -> str:
    keys = [ep.api_key()] if ep.api_key() else []
    text = str(exc) if isinstance(exc, PreflightError) else _describe(exc, ep)
    return secrets.scrub(text, keys)


def probe_arm(ep: Endpoint, prompts: list[ProbePrompt], output_tokens: int = OUTPUT_PROBE_TOKENS,
              timeout_s: float = 30.0) -> ArmProbe:
    """The arm-equivalence probes on one endpoint: each prompt with max_tokens=1 (its
    usage.prompt_tokens), then ``output_tokens`` asked with the load's body (ignore_eos where
    the config sends it). A probe that fails is described in ``errors``; nothing is raised."""
    probe = ArmProbe(ep.label, output_requested=output_tokens)
    client = _client(ep, timeout_s)
    try:
        for pp in prompts:
            try:
                seen = _stream_messages(client, ep, pp.messages, 1)
            except _request_failures() as exc:   # named in the warning
                probe.errors.append(f"prompt {pp.name!r}: {_failure(exc, ep)}")
                continue
            probe.prompt_tokens[pp.name] = (seen["usage"].prompt_tokens
                                            if seen["usage"] is not None else None)
        try:
            seen = _stream_messages(client, ep, output_probe(), output_tokens)
        except _request_failures() as exc:
            probe.errors.append(f"output length ({output_tokens} tokens): {_failure(exc, ep)}")
        else:
            probe.ignore_eos = seen["ignore_eos"]
            probe.finish_reason = seen["finish_reason"]
            if seen["usage"] is not None and seen["usage"].completion_tokens is not None:
                probe.output_tokens = seen["usage"].completion_tokens
            else:
                probe.output_tokens, probe.output_counted = seen["chunks"], "chunks"
    finally:
        client.close()
    return probe


def warm_cache(ep: Endpoint, prompts: list[list[dict[str, Any]]],
               timeout_s: float = 60.0) -> tuple[int, str]:
    """Send the warm-up prompts to one endpoint, one after the other, with the load's body.
    Returns (requests answered, the first failure described or "")."""
    client = _client(ep, timeout_s)
    sent = 0
    try:
        for messages in prompts:
            try:
                _stream_messages(client, ep, messages, WARM_OUTPUT_TOKENS)
            except _request_failures() as exc:   # named in the warning
                return sent, _failure(exc, ep)
            sent += 1
    finally:
        client.close()
    return sent, ""


def prompt_words(results: list[PreflightResult], input_tokens: int) -> int:
    """Words per synthetic prompt so the prompt lands near input_tokens on these endpoints.

    One figure for all endpoints (the mean of their calibrations), so every endpoint answers
    the same prompts.
    """
    sizes = []
    for r in results:
        if r.tokens_per_word and r.template_tokens is not None:
            sizes.append(max(1.0, (input_tokens - r.template_tokens) / r.tokens_per_word))
    if not sizes:
        return max(1, round(input_tokens * WORDS_PER_TOKEN))
    return max(1, round(sum(sizes) / len(sizes)))
