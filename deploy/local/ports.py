"""The embedded default's local ports, in one place (stdlib only: the launcher, the smoke check
and the campaign's hint import it). endpoints.toml and the docs spell the same URLs for people
to read; tests/loadgen/test_loadgen_config.py checks that endpoints.toml agrees."""

HOST = "127.0.0.1"
VLLM_PORTS = {"qwen3": 8101, "qwen2": 8102}        # vLLM's OpenAI API and /metrics
EXPORTER_PORTS = {"qwen3": 9411, "qwen2": 9412}    # the exporter beside each server


def base_url(label: str) -> str:
    """The OpenAI API base URL of a local server."""
    return f"http://{HOST}:{VLLM_PORTS[label]}/v1"


def local_origins() -> tuple[str, ...]:
    """``http://host:port`` of every local server (to tell an endpoint that is one)."""
    return tuple(f"http://{HOST}:{port}" for port in VLLM_PORTS.values())
