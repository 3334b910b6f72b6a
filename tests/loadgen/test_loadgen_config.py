import json
import re

import pytest

from core.config import ConfigError, load_config, parse_config, redact, with_overrides

BASE = {"endpoints": [{"label": "A", "base_url": "http://127.0.0.1:8101/v1", "model": "m1",
                       "api_key_env": "KEY_A", "request": {"max_tokens": 64}},
                      {"label": "B", "base_url": "http://127.0.0.1:8102/v1", "model": "m2"}],
        "request": {"temperature": 0.0}, "load": {"stages": [1, 2]}}


def test_defaults_and_per_endpoint_request_overrides():
    c = parse_config(BASE)
    a, b = c.endpoints
    assert a.request.max_tokens == 64 and a.request.temperature == 0.0
    assert b.request.max_tokens == 128 and b.request.temperature == 0.0
    assert c.load.stages == (1, 2) and c.load.repetitions == 5


def test_repository_default_config_loads():
    c = load_config()
    assert len(c.endpoints) == 2 and c.load.stages == (1, 4, 8, 16, 32)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["endpoints"][0].update(api_key="sk-123"), "looks like a secret"),
    (lambda d: d["endpoints"][0].update(base_url="127.0.0.1:8000"), "not an http(s) URL"),
    (lambda d: d["endpoints"][1].update(label="A"), "unique"),
    (lambda d: d["endpoints"][0].update(colour="red"), "unknown setting"),
    (lambda d: d["load"].update(stages=[0]), "stages"),
    (lambda d: d["load"].update(mode="sideways"), "closed"),
    (lambda d: d["load"].update(steady_s="long"), "expected float"),
    (lambda d: d.update(endpoints=[]), "no endpoints"),
    (lambda d: d["endpoints"][0].pop("model"), "model is required"),
])
def test_bad_configs_say_what_to_fix(mutate, message):
    data = json.loads(json.dumps(BASE))
    mutate(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[load\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_overrides_and_json_round_trip(tmp_path):
    c = with_overrides(parse_config(BASE), urls={"B": "http://127.0.0.1:9999/v1"},
                       models={"A": "other"}, stages=(4, 8), steady_s=5.0)
    assert c.endpoint("B").base_url == "http://127.0.0.1:9999/v1"
    assert c.endpoint("A").model == "other"
    assert c.load.stages == (4, 8) and c.load.steady_s == 5.0
    path = tmp_path / "c.json"
    path.write_text(json.dumps(c.to_file_dict()))
    again = load_config(path)
    assert again.endpoints == c.endpoints and again.load == c.load
    with pytest.raises(ConfigError, match="no endpoint labelled 'Z'"):
        with_overrides(c, urls={"Z": "http://x/v1"})


def test_key_is_read_from_the_environment_and_redacted(monkeypatch):
    monkeypatch.setenv("KEY_A", "sk-secret-value")
    c = parse_config(BASE)
    assert c.endpoint("A").api_key() == "sk-secret-value"
    assert "sk-secret-value" not in json.dumps(c.to_public_dict())
    assert redact("bad key sk-secret-value!", ["sk-secret-value"]) == "bad key ***!"
