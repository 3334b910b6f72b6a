"""The streamed answer: SSE events from a ``RequestPlan``, grouped into timed writes, written on time.

``StreamFormat.events`` yields ``(deadline, event_bytes, is_first_token)`` for one request; a
script (``plain_script`` / ``split_script``) groups them into actions ``(deadline, kind, payload,
n_events, is_first_token)``; a ``Pump`` writes each action at its deadline with ``loop.call_at``.
Everything is lazy, so a burst of arriving requests costs little, and the per-chunk path is the
same few byte concatenations whatever the plan.
"""
from __future__ import annotations

import json
import random

from bench.stub.plan import RequestPlan

WRITE, CLOSE = 0, 1

VOCAB = [" " + w for w in (
    "the quick brown fox jumps over a lazy dog while seven tired engineers measure every "
    "token that streams from one small server under heavy load and count each chunk twice"
).split()]
_VOCAB_JSON = [json.dumps(w).encode() for w in VOCAB]

_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'
_LAST_TAILS = {f: b'},"logprobs":null,"finish_reason":"%s","stop_reason":null}]}\n\n' % f.encode()
               for f in ("length", "stop")}
_DONE_EVENT = b"data: [DONE]\n\n"
_MALFORMED_EVENT = b"data: {not json\n\n"
_ENGINE_ERROR_EVENT = (b"data: " + json.dumps({"error": {
    "message": "stub: engine failed", "type": "InternalServerError", "code": 500}}).encode() + b"\n\n")
_CONTENT_DELTAS = [b'"content":' + w for w in _VOCAB_JSON]
_REASONING_DELTAS: dict[str, list[bytes]] = {}

_MID_STREAM_FAULTS = ("stream_error", "malformed", "truncate")
_ENDING_FAULTS = ("stream_error", "truncate")   # mid-stream faults after which nothing follows


def _reasoning_deltas(field: str) -> list[bytes]:
    d = _REASONING_DELTAS.get(field)
    if d is None:
        d = _REASONING_DELTAS[field] = [json.dumps(field).encode() + b":" + w for w in _VOCAB_JSON]
    return d


def stream_headers(chunked: bool, keep: bool) -> bytes:
    """The head of a 200 event-stream response."""
    return (b"HTTP/1.1 200 OK\r\nserver: stub\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\n"
            + (b"transfer-encoding: chunked\r\n" if chunked else b"")
            + (b"" if keep else b"connection: close\r\n") + b"\r\n")


class StreamFormat:
    """The SSE events of one server (its model name and reasoning field, encoded once)."""

    __slots__ = ("model", "model_json", "reasoning_deltas")

    def __init__(self, model: str, reasoning_field: str) -> None:
        self.model = model
        self.model_json = json.dumps(model).encode()
        self.reasoning_deltas = _reasoning_deltas(reasoning_field)

    def events(self, plan: RequestPlan, t0: float, cid: str, created: int):
        """Yields the SSE events ``(deadline, event_bytes, is_first_token)``; ``event_bytes`` None
        means: close the connection here (truncate)."""
        head = (b'data: {"id":"' + cid.encode() + b'","object":"chat.completion.chunk","created":'
                + str(created).encode() + b',"model":' + self.model_json
                + b',"choices":[{"index":0,"delta":{')
        tail = _TAIL
        last_tail = _LAST_TAILS[plan.finish_reason]
        fault = plan.fault
        n = plan.tokens
        r = plan.reasoning_tokens
        itl = plan.itl_s
        yield t0, head + b'"role":"assistant","content":""' + tail, False
        if fault == "empty_stream":  # the model answered nothing (e.g. EOS at once)
            d = t0 + plan.ttft_s
            yield d, head + b'"content":""' + last_tail, False
            if plan.include_usage:
                yield d, self.usage_event(plan, cid, created), False
            yield d, _DONE_EVENT, False
            return

        multi = fault == "multi_token_chunks"
        nch = r + ((n - r + 1) // 2 if multi else n - r)
        k = max(0, min(plan.fault_after, nch)) if fault in _MID_STREAM_FAULTS else -1
        base = t0 + plan.ttft_s + plan.stall_s
        rdelta = self.reasoning_deltas
        V = len(VOCAB)
        first = True
        last_d = t0
        idx = 0
        i = 0
        while i < n:
            if i < r:
                delta = rdelta[i % V]
                j = i + 1
            elif multi and i + 1 < n:
                delta = b'"content":' + json.dumps(VOCAB[i % V] + VOCAB[(i + 1) % V]).encode()
                j = i + 2
            else:
                delta = _CONTENT_DELTAS[i % V]
                j = i + 1
            d = base + i * itl
            if idx == k:
                yield from _fault_events(fault, d)
                if fault in _ENDING_FAULTS:
                    return
            yield d, head + delta + (last_tail if idx == nch - 1 else tail), first
            first = False
            last_d = d
            idx += 1
            i = j
        if k == nch:  # the fault comes after every token (fault_after >= tokens)
            d = base + n * itl
            yield from _fault_events(fault, d)
            if fault in _ENDING_FAULTS:
                return
            last_d = d
        if plan.include_usage and fault != "no_usage":
            yield last_d, self.usage_event(plan, cid, created), False
        yield last_d, _DONE_EVENT, False

    def usage_event(self, plan: RequestPlan, cid: str, created: int) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
               "model": self.model, "choices": [], "usage": plan.usage()}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _frame(ev: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(ev), ev)


def _fault_events(fault: str, d: float):
    """The events a mid-stream fault injects at deadline d (None: close without [DONE])."""
    if fault == "stream_error":
        yield d, _ENGINE_ERROR_EVENT, False
        yield d, _DONE_EVENT, False
    elif fault == "truncate":
        yield d, None, False
    else:
        yield d, _MALFORMED_EVENT, False


def plain_script(events, headers: bytes, chunked: bool):
    """Actions for a normal stream: events due at the same instant go out in one write (headers
    with the role chunk; last token, usage, [DONE] and the terminating chunk together)."""
    buf = [headers]
    first = False
    cur = None
    for d, ev, is_first in events:
        if ev is None:  # truncate: flush what is due, then close without the terminating chunk
            if len(buf) > 1:
                yield cur, WRITE, b"".join(buf), len(buf) - 1, first
            yield d, CLOSE, b"", 0, False
            return
        if cur is not None and d != cur:
            yield cur, WRITE, b"".join(buf), len(buf) - 1, first
            buf = [b""]
            first = False
        cur = d
        buf.append(b"%x\r\n%b\r\n" % (len(ev), ev) if chunked else ev)
        first = first or is_first
    nev = len(buf) - 1
    if chunked:
        buf.append(b"0\r\n\r\n")
    yield cur, WRITE, b"".join(buf), nev, first


def split_script(events, headers: bytes, chunked: bool, t0: float, rng: random.Random):
    """split_writes: each event in 2-3 writes (separate HTTP chunks, 1.5 ms apart); now and then two
    events coalesced into one HTTP chunk (never the role chunk or the first token)."""
    frame = _frame if chunked else (lambda b: b)
    yield t0, WRITE, headers, 0, False
    it = iter(events)
    ev_t = next(it, None)
    seen_first = False
    last_d = t0
    while ev_t is not None:
        d, ev, is_first = ev_t
        if ev is None:
            yield d, CLOSE, b"", 0, False
            return
        nxt = next(it, None)
        if seen_first and not is_first and nxt is not None and nxt[1] is not None and rng.random() < 0.3:
            d2 = max(d, nxt[0])
            yield d2, WRITE, frame(ev + nxt[1]), 2, False
            last_d = d2
            ev_t = next(it, None)
            continue
        seen_first = seen_first or is_first
        pieces = rng.choice((2, 3))
        cuts = sorted(rng.sample(range(1, len(ev)), pieces - 1))
        bounds = [0] + cuts + [len(ev)]
        for p in range(pieces):
            last_d = d + 0.0015 * p
            yield (last_d, WRITE, frame(ev[bounds[p]:bounds[p + 1]]),
                   1 if p == pieces - 1 else 0, is_first and p == pieces - 1)
        ev_t = nxt
    if chunked:
        yield last_d + 0.001, WRITE, b"0\r\n\r\n", 0, False


def then_close(script):
    d = None
    for act in script:
        d = act[0]
        yield act
    yield d, CLOSE, b"", 0, False


class Pump:
    """Writes a lazily generated script of actions on time.

    The script yields ``(deadline, kind, payload, n_events, is_first_token)``; payloads are built only
    when due, so a burst of arriving requests costs little, and each write is one ``call_at``.
    """

    __slots__ = ("loop", "transport", "script", "pending", "on_done", "stats", "timer")

    def __init__(self, loop, transport, script, stats, on_done):
        self.loop = loop
        self.transport = transport
        self.script = script
        self.stats = stats
        self.pending = None
        self.timer = None
        self.on_done = on_done

    def step(self) -> None:
        self.timer = None
        loop = self.loop
        tr = self.transport
        st = self.stats
        act = self.pending
        nxt = self.script.__next__
        while True:
            if act is None:
                try:
                    act = nxt()
                except StopIteration:
                    self.pending = None
                    self._finish("done")
                    return
            deadline, kind, payload, nev, first = act
            now = loop.time()
            if deadline > now:
                self.pending = act
                self.timer = loop.call_at(deadline, self.step)
                return
            if tr.is_closing():
                self.pending = None
                self._finish("client_gone")
                return
            if kind == WRITE:
                tr.write(payload)
                late = now - deadline
                st.writes += 1
                st.events_sent += nev
                st.late_sum += late
                if late > st.late_max:
                    st.late_max = late
                if late > 0.001:
                    st.late_over_1ms += 1
                    if late > 0.005:
                        st.late_over_5ms += 1
                if first:
                    st.first_late_n += 1
                    st.first_late_sum += late
                    if len(st.first_late_samples) < 1_000_000:
                        st.first_late_samples.append(late)
                    if late > st.first_late_max:
                        st.first_late_max = late
            else:
                tr.close()
            act = None

    def _finish(self, result: str) -> None:
        cb, self.on_done = self.on_done, None
        if cb is not None:
            cb(result)

    def cancel(self) -> None:
        """Stop writing; does not call on_done (the connection does the bookkeeping)."""
        self.on_done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
