"""Answers that are HTTP 200 but no usable stream, statuses after the headers, preflight bodies.

Both clients are run against the same stub behaviours: whatever the client, the same server
answer must get the same category (and the same http_status).
"""

import http.server
import math
import threading

import pytest

from core.config import Endpoint, RequestSettings
from core.records import ERROR_CATEGORIES, RequestRecord
from locustfiles.clients import FastClient, OpenAIClient, chat_body
from locustfiles.preflight import PreflightError, check_endpoint
from locustfiles.stream import StreamFailure, StreamRecorder
from support import StubProcesses

CLIENTS = [FastClient, OpenAIClient]


def endpoint(url, read_timeout=5.0, **extra):
    return Endpoint(label="A", base_url=url, model="stub-model", extra_body=extra,
                    request=RequestSettings(max_tokens=12, read_timeout_s=read_timeout,
                                            connect_timeout_s=1.0))


def send(client_cls, ep, **body_changes):
    client = client_cls(ep)
    try:
        body = chat_body(ep, [{"role": "user", "content": "hello there"}])
        body.update(body_changes)
        return client.stream_chat(body, RequestRecord())
    finally:
        client.close()


@pytest.fixture(scope="module")
def url():
    with StubProcesses() as stub:
        yield stub(ttft_ms=5, itl_ms=1)


def test_the_new_categories_are_defined():
    assert ERROR_CATEGORIES["not_event_stream"].startswith(
        "HTTP 200 but the response was not a server-sent event stream")
    assert "[DONE]" in ERROR_CATEGORIES["empty_answer"]


# ---- 1. HTTP 200 without an event stream, and streams without a token -----------------------
@pytest.mark.parametrize("client_cls", CLIENTS)
def test_a_json_answer_to_a_stream_request_is_not_an_event_stream(client_cls, url):
    r = send(client_cls, endpoint(url, stub_fault="json_answer"))
    assert not r.ok
    assert r.error_category == "not_event_stream", r.error_message
    assert r.http_status == 200
    assert "application/json" in r.error_message           # the Content-Type
    assert '"object": "chat.completion"' in r.error_message  # the start of the body
    assert len(r.error_message) < 400
    assert math.isnan(r.ttft_s) and r.chunks == 0


@pytest.mark.parametrize("client_cls", CLIENTS)
@pytest.mark.parametrize("include_usage", [True, False], ids=["usage_0", "no_usage"])
def test_a_stream_that_ends_without_a_token_is_an_empty_answer(client_cls, url, include_usage):
    r = send(client_cls, endpoint(url, stub_fault="empty_stream"),
             stream_options={"include_usage": include_usage})
    assert not r.ok
    assert r.error_category == "empty_answer", r.error_message
    assert r.http_status == 200
    assert r.chunks == 0 and r.output_tokens == 0 and math.isnan(r.ttft_s)
    assert r.tokens_from_usage is include_usage


@pytest.mark.parametrize("fault", ["json_answer", "empty_stream", "malformed", "stream_error",
                                   "http_503_html", "http_500", "reset", None])
def test_both_clients_agree_on_the_category_and_status(url, fault):
    extra = {"stub_fault": fault} if fault else {}
    fast = send(FastClient, endpoint(url, **extra))
    sdk = send(OpenAIClient, endpoint(url, **extra))
    assert (fast.ok, fast.error_category, fast.http_status) == (
        sdk.ok, sdk.error_category, sdk.http_status), (fast.error_message, sdk.error_message)


def test_a_stream_with_tokens_is_still_a_success(url):
    for client_cls in CLIENTS:
        r = send(client_cls, endpoint(url))
        assert r.ok and r.error_category == "" and r.output_tokens == 12


def _recorder_after(events, max_tokens_zero=False):
    rec = StreamRecorder(RequestRecord(), start=0.0)
    if max_tokens_zero:
        rec.expect_tokens = False
    for t, payload in enumerate(events):
        if rec.on_payload(payload, 0.1 * (t + 1)):
            break
    return rec.finish(1.0)


ROLE = b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
USAGE_0 = b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":0}}'
USAGE_3 = b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}'


def test_empty_answer_rule_at_the_recorder():
    r = _recorder_after([ROLE, USAGE_0, b"[DONE]"])
    assert (r.ok, r.error_category, r.http_status) == (False, "empty_answer", 200)
    r = _recorder_after([ROLE, b"[DONE]"])                      # no usage at all
    assert (r.ok, r.error_category) == (False, "empty_answer")
    # max_tokens 0 asked for no token: then none is no failure
    r = _recorder_after([ROLE, USAGE_0, b"[DONE]"], max_tokens_zero=True)
    assert r.ok and r.error_category == ""
    # the server says it produced tokens (e.g. tool calls, whitespace it did not stream): the
    # rule is about answers with nothing at all
    r = _recorder_after([ROLE, USAGE_3, b"[DONE]"])
    assert r.ok and r.output_tokens == 3


def test_max_tokens_zero_is_passed_on_by_both_clients(url, monkeypatch):
    # The stub refuses max_tokens 0 (as the config does), so only the flag is checked here.
    seen = []
    original = StreamRecorder.finish

    def spy(self, *args, **kwargs):
        seen.append(getattr(self, "expect_tokens", None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StreamRecorder, "finish", spy)
    for client_cls in CLIENTS:
        send(client_cls, endpoint(url), max_tokens=0)
        send(client_cls, endpoint(url))
    assert seen == [False, True, False, True]


# ---- 2. failures after the headers carry the status received --------------------------------
@pytest.mark.parametrize("client_cls", CLIENTS)
@pytest.mark.parametrize("fault, category", [
    ("malformed", "malformed_chunk"),
    ("stream_error", "stream_error"),
    ("json_answer", "not_event_stream"),
    ("empty_stream", "empty_answer"),
])
def test_failures_after_a_200_carry_http_status_200(client_cls, url, fault, category):
    r = send(client_cls, endpoint(url, stub_fault=fault))
    assert r.error_category == category, r.error_message
    assert r.http_status == 200


def test_a_chunk_that_is_no_chat_chunk_carries_the_status_too():
    rec = StreamRecorder(RequestRecord(), start=0.0)
    with pytest.raises(StreamFailure) as info:
        rec.on_payload(b'{"object": "something"}', 0.1)
    r = rec.finish(0.2, info.value, 200)
    assert (r.error_category, r.http_status) == ("malformed_chunk", 200)
    rec = StreamRecorder(RequestRecord(), start=0.0)   # no response at all: still 0
    r = rec.finish(0.2, StreamFailure("connection_refused", "refused"))
    assert r.http_status == 0


@pytest.mark.parametrize("client_cls", CLIENTS)
def test_read_timeout_mid_stream_carries_200(client_cls, url):
    r = send(client_cls, endpoint(url, read_timeout=0.5, stub_fault="stall", stub_stall_s=5))
    assert r.error_category == "read_timeout" and r.http_status == 200


def test_truncated_stream_carries_200(url):
    r = send(FastClient, endpoint(url, stub_fault="truncate"))
    assert r.error_category == "stream_truncated" and r.http_status == 200


# ---- HTML error bodies ----------------------------------------------------------------------
@pytest.mark.parametrize("client_cls", CLIENTS)
def test_an_html_error_body_is_kept_as_short_text(client_cls, url):
    r = send(client_cls, endpoint(url, stub_fault="http_503_html"))
    assert (r.error_category, r.http_status) == ("http_5xx", 503)
    assert "503 Service Unavailable" in r.error_message
    assert "The server is overloaded, try again later." in r.error_message
    assert "<" not in r.error_message and "  " not in r.error_message


def test_body_excerpt():
    from locustfiles.stream import body_excerpt

    html = b"<html><head><style>p {x: 1}</style><title>Bad\n Gateway</title></head>" \
           b"<body><!-- c --><p>upstream &amp; co.</p></body></html>"
    assert body_excerpt(html) == "Bad Gateway upstream & co."
    assert body_excerpt(b"") == "(empty body)"
    assert body_excerpt('{"a": "x < y > z"}') == '{"a": "x < y > z"}'   # not HTML: kept
    long = body_excerpt("word " * 100, limit=50)
    assert len(long) <= 50 and long.endswith("...")


# ---- 3. preflight keeps the status and the body ---------------------------------------------
HTML_503 = (b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>\n<body>\n"
            b"  <h1>Service Unavailable</h1>\n  <p>the server   is overloaded</p>\n</body></html>\n")


@pytest.fixture
def html_503_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML_503)))
            self.end_headers()
            self.wfile.write(HTML_503)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_preflight_names_the_status_and_the_body_of_an_html_503(html_503_server):
    with pytest.raises(PreflightError) as info:
        check_endpoint(endpoint(html_503_server), timeout_s=5)
    message = str(info.value)
    assert f"HTTP 503 from {html_503_server}/models: " in message, message
    assert "Service Unavailable" in message and "the server is overloaded" in message
    assert "<" not in message and "Error code" not in message and len(message) < 400


def test_preflight_on_an_html_503_to_the_chat(url):
    with pytest.raises(PreflightError) as info:
        check_endpoint(endpoint(url, stub_fault="http_503_html"), timeout_s=5)
    message = str(info.value)
    assert message.startswith("endpoint 'A': ")
    assert f"HTTP 503 from {url}/chat/completions: 503 Service Unavailable" in message, message
    assert "overloaded" in message and "<" not in message


def test_preflight_says_when_the_chat_is_not_an_event_stream(url):
    with pytest.raises(PreflightError) as info:
        check_endpoint(endpoint(url, stub_fault="json_answer"), timeout_s=5)
    message = str(info.value)
    assert "did not answer the streamed chat with a server-sent event stream" in message
    assert "Content-Type application/json" in message
    assert "stream=true" in message
