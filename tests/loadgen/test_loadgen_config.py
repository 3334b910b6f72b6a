import json
import re

import pytest

from core import secrets
from core.config import ConfigError, load_config, parse_config, with_overrides

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
    (lambda d: d["load"].update(steady_s="long"), "steady_s = 'long': expected a number > 0"),
    # types and ranges, each in the config's one-line style (issue 11, item 8)
    (lambda d: d["request"].update(max_tokens=0), "max_tokens = 0: must be a whole number >= 1"),
    (lambda d: d["endpoints"][0]["request"].update(max_tokens=-5), "max_tokens = -5: must be"),
    (lambda d: d["request"].update(max_tokens=True), "max_tokens = True: expected a whole number"),
    (lambda d: d["request"].update(read_timeout_s=-1), "read_timeout_s = -1.0: must be a number > 0"),
    (lambda d: d["request"].update(connect_timeout_s=0), "connect_timeout_s = 0.0: must be"),
    (lambda d: d["request"].update(temperature=-0.1), "temperature = -0.1: must be a number >= 0"),
    (lambda d: d["request"].update(ignore_eos="yes"), "ignore_eos = 'yes': expected true or false"),
    (lambda d: d["load"].update(stages=["a"]), "stages = ('a',): expected a list of one or more numbers"),
    (lambda d: d["load"].update(stages=[1.5]), "stages = (1.5,): expected a list"),
    (lambda d: d["load"].update(stages=[]), "stages = (): expected a list"),
    (lambda d: d["load"].update(stages="4"), "stages = '4': expected a list"),
    (lambda d: d["load"].update(rates=[0]), "rates = (0.0,): each value must be a number > 0"),
    (lambda d: d["load"].update(max_in_flight=0), "max_in_flight = 0: must be"),
    (lambda d: d["load"].update(failure_backoff_s=-1), "failure_backoff_s = -1.0: must be"),
    (lambda d: d["load"].update(failure_backoff_s=4, failure_backoff_max_s=1), "below failure_backoff_s"),
    (lambda d: d.update(load=[1]), "[load] must be a table"),
    (lambda d: d["endpoints"].append("x"), "#3: expected a table"),
    (lambda d: d["endpoints"][0].update(api_key_env="sk-live-0123456789abcdef"), "looks like a secret"),
    (lambda d: d["endpoints"][0].update(api_key_env="my key"), "NAME of an environment variable"),
    (lambda d: d["endpoints"][0].update(metrics_url=7), "metrics_url must be a URL string"),
    (lambda d: d.update(endpoints=[]), "no endpoints"),
    (lambda d: d["endpoints"][0].pop("model"), "model is required"),
])
def test_bad_configs_say_what_to_fix(mutate, message):
    data = json.loads(json.dumps(BASE))
    mutate(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data)


KEY = "sk-proj-0123456789abcdefXYZ"


@pytest.mark.parametrize("mutate", [
    lambda d: d["endpoints"][0].update(api_key=KEY),
    lambda d: d["endpoints"][0].update(extra_body={"api_key": KEY}),
    lambda d: d["endpoints"][0].update(extra_body={"auth": {"Bearer-Token": "plain-words"}}),
    lambda d: d["endpoints"][0].update(extra_body={"headers": [{"x-api-key": "abc"}]}),
    lambda d: d["endpoints"][0].update(extra_body={"note": KEY}),
    lambda d: d["endpoints"][0].update(extra_body={"notes": [f"Bearer {KEY[3:]}"]}),
    lambda d: d["endpoints"][0].update(base_url=f"http://user:{KEY}@127.0.0.1:8101/v1"),
    lambda d: d["endpoints"][0].update(base_url="http://user:hunter2@127.0.0.1:8101/v1"),
    lambda d: d["endpoints"][0].update(base_url="http://127.0.0.1:8101/v1?api_key=hunter2"),
    lambda d: d["endpoints"][0].update(metrics_url="http://u:hunter2@127.0.0.1:8101/metrics"),
    lambda d: d["endpoints"][0].update(exporter_url=f"http://127.0.0.1:9411/metrics?token={KEY}"),
    lambda d: d["endpoints"][0].update(model=KEY),
    lambda d: d["endpoints"][0].update(label=KEY[:30]),
    lambda d: d["load"].update(prompts_file=f"/tmp/{KEY}.jsonl"),
    lambda d: d["request"].update(token="x"),
    lambda d: d.update(password="x"),
])
def test_credentials_anywhere_are_refused_without_echoing_them(mutate):
    data = json.loads(json.dumps(BASE))
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="ep.toml")
    message = str(info.value)
    assert "secret" in message or "credential" in message or "user name or password" in message
    assert "api_key_env" in message  # says where a key goes instead
    for leaked in (KEY, KEY[3:], KEY[:30], "hunter2", "plain-words", "abc"):
        assert leaked not in message


def test_settings_with_secret_like_words_that_hold_none_are_accepted():
    data = json.loads(json.dumps(BASE))
    data["endpoints"][0]["extra_body"] = {"return_tokens_as_token_ids": False, "top_k": 5,
                                          "stop_token_ids": [2], "skip_special_tokens": True}
    assert parse_config(data).endpoint("A").extra_body["top_k"] == 5


def test_overrides_refuse_credentials_and_bad_values():
    c = parse_config(BASE)
    with pytest.raises(ConfigError, match="user name or password") as info:
        with_overrides(c, urls={"A": "http://me:hunter2@127.0.0.1:1/v1"})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="looks like a secret"):
        with_overrides(c, models={"A": KEY})
    with pytest.raises(ConfigError, match=re.escape("stages = (0,)")):
        with_overrides(c, stages=(0,))
    with pytest.raises(ConfigError, match=re.escape("steady_s = -3.0: must be a number > 0")):
        with_overrides(c, steady_s=-3.0)


def test_relative_prompts_file_is_read_from_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cfg"
    folder.mkdir()
    data = json.loads(json.dumps(BASE))
    data["load"]["prompts_file"] = "prompts/my.jsonl"
    (folder / "ep.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    c = load_config(folder / "ep.json")
    assert c.load.prompts_file == str(folder.resolve() / "prompts" / "my.jsonl")
    # on the command line, a relative path is where the user is
    c2 = with_overrides(c, prompts_file="here.jsonl")
    assert c2.load.prompts_file == str(tmp_path.resolve() / "here.jsonl")


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
    assert secrets.scrub("bad key sk-secret-value!", ["sk-secret-value"]) == "bad key ***!"


def test_one_flag_per_load_setting_for_locust_and_the_campaign():
    """Both command lines get their [load] flags from core.config.add_load_flags."""
    import dataclasses

    import configargparse

    from core.config import LoadSettings, load_flags, load_overrides
    from locustfiles.campaign_args import build_parser
    from locustfiles.cliargs import NOT_LOCUST_FLAGS, add_arguments

    names = [f.name for f in dataclasses.fields(LoadSettings)]
    assert [spec.name for spec in load_flags()] == names
    kinds = {spec.name: (spec.kind, spec.is_list) for spec in load_flags()}
    assert kinds["stages"] == (int, True) and kinds["rates"] == (float, True)
    assert kinds["steady_s"] == (float, False) and kinds["mode"] == (str, False)
    campaign = build_parser().parse_args(["--stages", "1,8", "--steady-s", "60",
                                          "--repetitions", "2"])
    assert {k: v for k, v in load_overrides(campaign).items() if v is not None} == \
        {"stages": (1, 8), "steady_s": 60.0, "repetitions": 2}
    parser = configargparse.ArgumentParser()
    add_arguments(parser)
    locust = parser.parse_args(["--rates", "0.5,2", "--mode", "open"])
    assert {k: v for k, v in load_overrides(locust, skip=NOT_LOCUST_FLAGS).items()
            if v is not None} == {"rates": (0.5, 2.0), "mode": "open"}
    assert not hasattr(locust, "load_repetitions")
    with pytest.raises(ConfigError, match="--stages: expected numbers separated by commas"):
        load_overrides(build_parser().parse_args(["--stages", "1.5"]))


def test_user_classes_are_named_in_one_place():
    from locustfiles.plan import user_class_name

    assert user_class_name("closed", "qwen-3.b") == "Chat_qwen_3_b"
    assert user_class_name("open", "A") == "OpenLoop_A"


def test_the_default_config_points_at_the_local_servers_ports():
    from deploy.local import ports

    by_label = {ep.label: ep for ep in load_config().endpoints}
    assert set(by_label) == set(ports.VLLM_PORTS)
    for label, port in ports.VLLM_PORTS.items():
        assert by_label[label].base_url == ports.base_url(label)
        assert by_label[label].metrics_url == f"http://{ports.HOST}:{port}/metrics"
        assert by_label[label].exporter_url == \
            f"http://{ports.HOST}:{ports.EXPORTER_PORTS[label]}/metrics"
        assert by_label[label].base_url.startswith(ports.local_origins())


def test_the_reasoning_field_is_read_in_one_place():
    from types import SimpleNamespace

    from locustfiles.stream import reasoning_of

    assert reasoning_of({"reasoning": "a"}) == "a"
    assert reasoning_of({"reasoning_content": "b", "content": "x"}) == "b"
    assert reasoning_of({"content": "x"}) is None
    assert reasoning_of(SimpleNamespace(reasoning=None, reasoning_content="c")) == "c"
    assert reasoning_of(SimpleNamespace(content="x")) is None
