"""A tiny stdlib-only streaming client: a smoke test and a quick throughput check of the local servers.

    python -m deploy.local.loadcheck                     # both servers, 50 requests at 1 and 8 users
    python -m deploy.local.loadcheck --only qwen3 -n 20 -c 1 4 --max-tokens 64

Not the suite's load generator (that is Locust, in locustfiles/): this exists so the launcher and
its test can check the servers without the suite's dependencies. TTFT here is "request sent ->
first chunk carrying reasoning or answer text" (role-only and empty chunks do not count).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from deploy.local.ports import base_url

DEFAULT_TARGETS = {
    "qwen3": (base_url("qwen3"), "tiny-qwen3", {"chat_template_kwargs": {"enable_thinking": True}}),
    "qwen2": (base_url("qwen2"), "tiny-qwen2", {}),
}


@dataclass
class StreamResult:
    ok: bool = False
    error: str | None = None
    status: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    reasoning_chunks: int = 0
    content_chunks: int = 0
    reasoning_text: str = ""
    content_text: str = ""
    usage: dict | None = None
    finish_reason: str | None = None
    events: list = field(default_factory=list, repr=False)

    @property
    def completion_tokens(self) -> int | None:
        return (self.usage or {}).get("completion_tokens")

    @property
    def reasoning_tokens(self) -> int | None:
        details = (self.usage or {}).get("completion_tokens_details") or {}
        return details.get("reasoning_tokens")


def stream_chat(
    base_url: str,
    model: str,
    prompt: str,
    *,
    max_tokens: int = 128,
    extra_body: dict | None = None,
    timeout_s: float = 60.0,
    keep_events: bool = False,
) -> StreamResult:
    """One streamed chat completion with ignore_eos and usage; never raises."""
    res = StreamResult()
    url = urlsplit(base_url.rstrip("/") + "/chat/completions")
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.5,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra_body or {}),
    }
    payload = json.dumps(body).encode()
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout_s)
        conn.request("POST", url.path, body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        res.status = resp.status
        if resp.status != 200:
            res.error = f"HTTP {resp.status}: {resp.read(500)!r}"
            return res
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if keep_events:
                res.events.append(event)
            if "error" in event:  # vLLM reports engine failures in-band, after HTTP 200
                res.error = f"in-stream error: {event['error']}"
                continue
            if event.get("usage"):
                res.usage = event["usage"]
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning") or delta.get("reasoning_content")
                content = delta.get("content")
                if (reasoning or content) and res.ttft_s is None:
                    res.ttft_s = time.perf_counter() - t0
                if reasoning:
                    res.reasoning_chunks += 1
                    res.reasoning_text += reasoning
                if content:
                    res.content_chunks += 1
                    res.content_text += content
                if choice.get("finish_reason"):
                    res.finish_reason = choice["finish_reason"]
        res.e2e_s = time.perf_counter() - t0
        conn.close()
        if not done and res.error is None:
            res.error = "stream ended without [DONE]"
        res.ok = res.error is None and res.ttft_s is not None
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        res.error = f"{type(exc).__name__}: {exc}"
        res.e2e_s = time.perf_counter() - t0
    return res


def run_load(
    base_url: str,
    model: str,
    *,
    requests: int,
    concurrency: int,
    max_tokens: int = 128,
    extra_body: dict | None = None,
) -> dict:
    """`requests` streamed requests from `concurrency` threads; returns a summary dict."""
    results: list[StreamResult] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            r = stream_chat(
                base_url, model, f"Task {i:012x}. compare the latency of the model server quickly",
                max_tokens=max_tokens, extra_body=extra_body,
            )
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    ttfts = sorted(r.ttft_s for r in ok)
    e2es = sorted(r.e2e_s for r in ok)
    tokens = sum(r.completion_tokens or 0 for r in ok)

    def pct(xs: list[float], q: float) -> float | None:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None

    return {
        "requests": requests,
        "concurrency": concurrency,
        "ok": len(ok),
        "errors": sorted({r.error for r in results if not r.ok}),
        "wall_s": wall,
        "req_per_s": len(ok) / wall if wall else 0.0,
        "output_tok_per_s": tokens / wall if wall else 0.0,
        "ttft_p50_ms": 1000 * statistics.median(ttfts) if ttfts else None,
        "ttft_p90_ms": 1000 * pct(ttfts, 0.9) if ttfts else None,
        "e2e_p50_ms": 1000 * statistics.median(e2es) if e2es else None,
        "completion_tokens_mean": tokens / len(ok) if ok else None,
        "reasoning_tokens_mean": (
            sum(r.reasoning_tokens or 0 for r in ok) / len(ok) if ok else None
        ),
        "reasoning_chunks_mean": sum(r.reasoning_chunks for r in ok) / len(ok) if ok else None,
        "content_chunks_mean": sum(r.content_chunks for r in ok) / len(ok) if ok else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="quick streamed throughput check of the local servers")
    ap.add_argument("--only", choices=sorted(DEFAULT_TARGETS), action="append")
    ap.add_argument("-n", "--requests", type=int, default=50)
    ap.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json", action="store_true", help="print one JSON line per run")
    args = ap.parse_args(argv)
    failed = False
    for label in args.only or sorted(DEFAULT_TARGETS, reverse=True):
        base_url, model, extra = DEFAULT_TARGETS[label]
        run_load(base_url, model, requests=min(4, args.requests), concurrency=1,
                 max_tokens=8, extra_body=extra)  # warm-up
        for c in args.concurrency:
            s = run_load(base_url, model, requests=args.requests, concurrency=c,
                         max_tokens=args.max_tokens, extra_body=extra)
            s["label"] = label
            failed |= s["ok"] < s["requests"]
            if args.json:
                print(json.dumps(s))
                continue
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            print(
                f"{label} c={c:<3} ok {s['ok']}/{s['requests']}  {s['req_per_s']:.2f} req/s  "
                f"{s['output_tok_per_s']:.0f} tok/s  TTFT p50 {fmt(s['ttft_p50_ms'])} ms "
                f"p90 {fmt(s['ttft_p90_ms'])} ms  E2E p50 {fmt(s['e2e_p50_ms'])} ms  "
                f"tokens {fmt(s['completion_tokens_mean'])} (reasoning {fmt(s['reasoning_tokens_mean'])})  "
                f"chunks reasoning {fmt(s['reasoning_chunks_mean'])} content {fmt(s['content_chunks_mean'])}"
                + (f"  errors {s['errors']}" if s["errors"] else "")
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
