import math

import orjson
import pytest

from core.records import RequestRecord
from locustfiles.stream import StreamFailure, StreamRecorder


def chunk(content=None, reasoning=None, role=None, usage=None, choices=True):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning"] = reasoning
    body = {"id": "x", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if choices else []}
    if usage:
        body["usage"] = usage
    return orjson.dumps(body)


def feed(recorder, events):
    for payload, t in events:
        if recorder.on_payload(payload, t):
            return True
    return False


def test_timings_tokens_and_gaps_from_a_reasoning_stream():
    rec = StreamRecorder(RequestRecord(), start=100.0)
    usage = {"prompt_tokens": 64, "completion_tokens": 5,
             "completion_tokens_details": {"reasoning_tokens": 2}}
    done = feed(rec, [
        (chunk(role="assistant", content=""), 100.010),   # role-only: not a token
        (chunk(reasoning="think"), 100.050),              # TTFT = 50 ms
        (chunk(reasoning="more"), 100.060),
        (chunk(content="A"), 100.080),                    # TTFAT = 80 ms
        (chunk(content="B"), 100.090),
        (chunk(content="C"), 100.130),
        (chunk(choices=False, usage=usage), 100.131),
        (b"[DONE]", 100.132),
    ])
    assert done
    r = rec.finish(100.140)   # the client finished later than [DONE] arrived
    assert r.ok and r.error_category == ""
    assert r.ttft_s == pytest.approx(0.050)
    assert r.ttfat_s == pytest.approx(0.080)
    assert r.e2e_s == pytest.approx(0.132)   # E2E ends when [DONE] arrived
    assert (r.chunks, r.reasoning_chunks, r.answer_chunks) == (5, 2, 3)
    assert r.tokens_from_usage
    assert (r.prompt_tokens, r.output_tokens, r.reasoning_tokens, r.answer_tokens) == (64, 5, 2, 3)
    # gaps 10, 20, 10, 40 ms
    assert r.itl_mean_s == pytest.approx(0.020)
    assert r.itl_p50_s == pytest.approx(0.010)
    assert r.itl_max_s == pytest.approx(0.040)
    assert r.itl_p99_s == pytest.approx(0.040)
    assert r.tpot_s == pytest.approx((0.132 - 0.050) / 4)


def test_without_usage_tokens_fall_back_to_chunks_and_say_so():
    rec = StreamRecorder(RequestRecord(), start=0.0)
    feed(rec, [(chunk(content="x"), 0.1), (chunk(content="y"), 0.2), (b"[DONE]", 0.3)])
    r = rec.finish(0.3)
    assert r.ok and not r.tokens_from_usage
    assert r.output_tokens == 2 and r.reasoning_tokens == 0 and r.answer_tokens == 2
    assert math.isnan(r.prompt_tokens)


def test_error_event_after_http_200_is_a_stream_error():
    rec = StreamRecorder(RequestRecord(), start=0.0)
    with pytest.raises(StreamFailure) as info:
        feed(rec, [(chunk(content="x"), 0.1),
                   (b'{"error": {"message": "engine died", "code": 500}}', 0.2)])
    assert info.value.category == "stream_error"
    r = rec.finish(0.2, info.value)
    assert not r.ok and r.error_category == "stream_error"
    assert "engine died" in r.error_message
    assert r.ttft_s == pytest.approx(0.1)   # what was reached is kept


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'{"object": "something"}'])
def test_malformed_events(payload):
    rec = StreamRecorder(RequestRecord(), start=0.0)
    with pytest.raises(StreamFailure) as info:
        rec.on_payload(payload, 0.1)
    assert info.value.category == "malformed_chunk"


def test_missing_done_is_a_truncated_stream():
    rec = StreamRecorder(RequestRecord(), start=0.0)
    feed(rec, [(chunk(content="x"), 0.1)])
    r = rec.finish(0.5)
    assert not r.ok and r.error_category == "stream_truncated"


def test_no_token_at_all_leaves_ttft_nan_not_zero():
    rec = StreamRecorder(RequestRecord(), start=0.0)
    r = rec.finish(0.5, StreamFailure("connection_refused", "refused"))
    assert math.isnan(r.ttft_s) and math.isnan(r.output_tokens)
    assert r.error_category == "connection_refused"


def test_reasoning_content_field_of_older_vllm_counts_as_reasoning():
    rec = StreamRecorder(RequestRecord(), start=0.0)
    rec.on_payload(orjson.dumps({"choices": [{"delta": {"reasoning_content": "hm"}}]}), 0.1)
    rec.on_payload(b"[DONE]", 0.2)
    r = rec.finish(0.2)
    assert r.reasoning_chunks == 1 and r.reasoning_tokens == 1
