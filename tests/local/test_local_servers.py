"""The embedded default: two tiny random models on real vLLM (CPU), started by deploy/local/servers.py.

These tests are fast and need no vLLM; the real servers are exercised in test_e2e_vllm.py.
"""

from __future__ import annotations

import socket
import time

import psutil
import pytest

from deploy.local import servers as ls
from support import free_port


# ---------------------------------------------------------------------------------------------
# fast: no vLLM needed
# ---------------------------------------------------------------------------------------------

def test_port_owner_names_the_listening_process():
    port = free_port()
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
