"""The Grafana live view (deploy/grafana), checked offline: Grafana cannot be installed here.

The shipped dashboards pass ``check_structure``; the checker reports planted problems; variables
are substituted as Grafana's Prometheus data source does; the provisioning and compose files
parse and point at files that exist. The live check (every panel's query against a real
Prometheus during a real run) is in tests/local/test_e2e_vllm.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from core.rundir import series
from deploy.grafana import dashboards as d

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"


@pytest.fixture(scope="module")
def shipped() -> dict[str, dict]:
    found = d.load_all()
    assert found, "no dashboards in deploy/grafana/dashboards"
    return found


def _one(shipped: dict[str, dict]) -> dict:
    return copy.deepcopy(next(iter(shipped.values())))


def _first_panel(dash: dict) -> dict:
    return next(p for p in d.iter_panels(dash) if not d.is_row(p))


# ---- the shipped dashboards ---------------------------------------------------------------------

def test_shipped_dashboards_are_structurally_sound(shipped):
    for name, dash in shipped.items():
        assert d.check_structure(dash) == [], name
        assert 38 <= dash["schemaVersion"] <= 41, name


def test_dashboard_uids_and_titles_are_unique(shipped):
    uids = [x["uid"] for x in shipped.values()]
    titles = [x["title"] for x in shipped.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


def test_the_issue_asks_for_these_variables_panels_and_annotations(shipped):
    dash = shipped["llm-live.json"]
    assert {"endpoint", "run", "gpu"} <= {v["name"] for v in d.variables(dash)}
    exprs = " ".join(q.expr for q in d.queries(dash))
    for metric in (series.CLIENT_USERS, series.CLIENT_TARGET_RATE, series.CLIENT_REQUESTS,
                   series.CLIENT_OUTPUT_TOKENS, series.CLIENT_LOOP_LAG, series.CLIENT_SEND_LAG,
                   series.CLIENT_RECORDS_BEHIND, series.CLIENT_IN_FLIGHT,
                   *(f"{h}_bucket" for h in (series.CLIENT_TTFT, series.CLIENT_TTFAT,
                                             series.CLIENT_TPOT, series.CLIENT_E2E)),
                   series.GPU_UTILIZATION, series.GPU_SM_ACTIVE, series.GPU_TENSOR_ACTIVE,
                   series.GPU_MEMORY_USED, series.GPU_POWER, series.GPU_ENERGY,
                   series.VLLM_RUNNING, series.VLLM_WAITING, series.VLLM_KV_CACHE_USAGE,
                   series.VLLM_GPU_CACHE_USAGE, f"{series.VLLM_TTFT}_bucket"):
        assert metric in exprs, metric
    # client and vLLM TTFT quantiles on one panel
    ttft = [p for p in d.iter_panels(dash)
            if {f"{series.CLIENT_TTFT}_bucket", f"{series.VLLM_TTFT}_bucket"}
            <= set().union(*(d.metric_names(t["expr"]) for t in p.get("targets", [])) or [set()])]
    assert ttft, "no panel shows the client's and vLLM's TTFT together"
    exprs_ttft = [t["expr"] for t in ttft[0]["targets"]]
    assert any("0.5," in e for e in exprs_ttft) and any("0.99," in e for e in exprs_ttft)
    # energy per output token joins GPU energy and client tokens on endpoint
    energy = [q for q in d.queries(dash)
              if {series.GPU_ENERGY, series.CLIENT_OUTPUT_TOKENS} <= d.metric_names(q.expr)]
    assert energy and "by (endpoint)" in energy[0].expr
    # stage changes annotated
    annotations = [q for q in d.queries(dash) if q.kind == "annotation"]
    assert any(series.CLIENT_STAGE in q.expr for q in annotations)


def test_every_latency_quantile_is_per_endpoint_over_buckets(shipped):
    for dash in shipped.values():
        for q in d.queries(dash):
            if "histogram_quantile" in q.expr:
                assert re.search(r"sum by \(le, endpoint\) \(rate\(\S+_bucket\{", q.expr), q.name


def test_every_selector_of_a_client_series_filters_on_the_chosen_run(shipped):
    for dash in shipped.values():
        for q in d.queries(dash):
            for m in re.finditer(r"(llm_client_\w+)\{([^}]*)\}", q.expr):
                assert 'run=~"$run"' in m.group(2), (q.name, m.group(0))


# ---- the checker catches planted problems -------------------------------------------------------

def test_checker_reports_a_duplicate_panel_id(shipped):
    dash = _one(shipped)
    panels = [p for p in d.iter_panels(dash) if not d.is_row(p)]
    panels[1]["id"] = panels[0]["id"]
    problems = d.check_structure(dash)
    assert any(f"id {panels[0]['id']} already used" in p for p in problems), problems


def test_checker_reports_a_duplicate_id_inside_a_collapsed_row(shipped):
    dash = _one(shipped)
    row = next(p for p in dash["panels"] if d.is_row(p))
    hidden = copy.deepcopy(_first_panel(dash))
    row["collapsed"], row["panels"] = True, [hidden]
    assert any("already used" in p for p in d.check_structure(dash))


def test_checker_reports_a_missing_or_foreign_datasource(shipped):
    dash = _one(shipped)
    panel = _first_panel(dash)
    del panel["datasource"]
    panel["targets"][0]["datasource"] = {"type": "prometheus", "uid": "someone-elses"}
    problems = d.check_structure(dash)
    assert any(f"panel {panel['id']}" in p and "data source" in p for p in problems), problems
    assert any(f"{panel['title']!r} A: data source" in p for p in problems), problems


def test_checker_accepts_the_datasource_variable_only_where_it_is_defined(shipped):
    dash = _one(shipped)
    for p in d.iter_panels(dash):
        p["datasource"] = {"type": "prometheus", "uid": "${datasource}"}
        for t in p.get("targets", []):
            t["datasource"] = {"type": "prometheus", "uid": "${datasource}"}
    assert any("data source" in p for p in d.check_structure(dash))
    dash["templating"]["list"].insert(0, {"name": "datasource", "type": "datasource",
                                          "query": "prometheus"})
    for v in dash["templating"]["list"][1:]:
        v["datasource"] = {"type": "prometheus", "uid": "${datasource}"}
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            a["datasource"] = {"type": "prometheus", "uid": "${datasource}"}
    assert d.check_structure(dash) == []


def test_checker_reports_an_unknown_variable(shipped):
    dash = _one(shipped)
    panel = _first_panel(dash)
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("$run", "$runn")
    problems = d.check_structure(dash)
    assert any("undefined variable $runn" in p for p in problems), problems


def test_checker_reports_variable_problems(shipped):
    dash = _one(shipped)
    vars_ = dash["templating"]["list"]
    vars_.append(copy.deepcopy(vars_[0]))                          # duplicate name
    vars_.append({"name": "nodata", "type": "query", "query": "",
                  "datasource": {"type": "prometheus", "uid": "llm-prometheus"}})
    vars_.append({"name": "nods", "type": "query", "query": "label_values(up, job)"})
    vars_.append({"name": "refs", "type": "query", "query": 'label_values(up{x="$nope"}, job)',
                  "datasource": {"type": "prometheus", "uid": "llm-prometheus"}})
    problems = "\n".join(d.check_structure(dash))
    assert f"variable {vars_[0]['name']!r} is defined more than once" in problems
    assert "'nodata': query variable without a query" in problems
    assert "'nods': data source" in problems
    assert "'refs': references undefined variable $nope" in problems


def test_checker_reports_an_unknown_metric(shipped):
    dash = _one(shipped)
    panel = _first_panel(dash)
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace(
        "llm_client_users", "llm_client_userz")
    dash["templating"]["list"][-1]["query"]["query"] = "label_values(nvml_gpu_upp, gpu)"
    problems = d.check_structure(dash)
    assert any("unknown metric 'llm_client_userz'" in p for p in problems), problems
    assert any("unknown metric 'nvml_gpu_upp'" in p for p in problems), problems


def test_checker_reports_overlapping_and_missing_grid_positions(shipped):
    dash = _one(shipped)
    panels = [p for p in dash["panels"] if not d.is_row(p)]
    panels[1]["gridPos"] = dict(panels[0]["gridPos"], x=panels[0]["gridPos"]["x"] + 1)
    del panels[2]["gridPos"]
    panels[3]["gridPos"] = dict(panels[3]["gridPos"], x=20, w=8)
    problems = "\n".join(d.check_structure(dash))
    assert f"panel {panels[1]['id']}" in problems and "overlaps" in problems
    assert f"panel {panels[2]['id']} {panels[2]['title']!r}: gridPos missing" in problems
    assert "outside the 24-column grid" in problems


def test_checker_reports_empty_and_unbalanced_queries(shipped):
    dash = _one(shipped)
    panel = _first_panel(dash)
    panel["targets"][0]["expr"] = "sum(rate(llm_client_requests_total[1m])"
    panel["targets"].append({"refId": "Z", "expr": "",
                             "datasource": {"type": "prometheus", "uid": "llm-prometheus"}})
    problems = "\n".join(d.check_structure(dash))
    assert "unbalanced brackets" in problems and "empty expression" in problems


# ---- PromQL metric names ------------------------------------------------------------------------

@pytest.mark.parametrize("expr, names", [
    ('histogram_quantile(0.99, sum by (le, endpoint) (rate(llm_client_ttft_seconds_bucket'
     '{endpoint=~"$endpoint", run=~"$run"}[$__rate_interval])))',
     {"llm_client_ttft_seconds_bucket"}),
    ('sum by (endpoint) (rate(nvml_gpu_energy_joules_total[5m])) / (sum by (endpoint) '
     '(rate(llm_client_output_tokens_total[5m])) > 0)',
     {"nvml_gpu_energy_joules_total", "llm_client_output_tokens_total"}),
    ('max by (endpoint) (vllm:kv_cache_usage_perc) or max(vllm:gpu_cache_usage_perc) by (endpoint)',
     {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}),
    ('a / ignoring (x) group_left (y) b offset 5m > bool 1e-3', {"a", "b"}),
    ('count({__name__="up", job="x"}) + topk(3, up)', {"up"}),
    ('label_replace(up, "dst", "$1", "src", "(.*)")', {"up"}),
])
def test_metric_names_of_a_query(expr, names):
    assert d.metric_names(expr) == names


def test_known_metrics_come_from_the_series_module():
    known = d.known_metrics()
    assert {series.CLIENT_USERS, f"{series.CLIENT_E2E}_bucket", series.GPU_POWER,
            f"{series.VLLM_TTFT}_count", series.PROCESS_CPU, "up"} <= known
    assert series.CLIENT_PREFIX not in known and series.VLLM_PREFIX not in known
    assert series.SCRAPE_UP not in known        # a metrics.csv row, not a Prometheus series


# ---- variable substitution ----------------------------------------------------------------------

def test_substitute_plain_braced_and_old_syntax():
    values = {"endpoint": ["qwen3"], "run": ".*", "__rate_interval": "8s"}
    assert d.substitute('x{e=~"$endpoint", r=~"${run}"}[$__rate_interval]', values) \
        == 'x{e=~"qwen3", r=~".*"}[8s]'
    assert d.substitute('x{e=~"[[endpoint]]"}', values) == 'x{e=~"qwen3"}'


def test_substitute_multi_value_as_an_escaped_regex_alternation():
    values = {"endpoint": ["a.b", "c(d)", "e"]}
    assert d.substitute('x{e=~"$endpoint"}', values) == r'x{e=~"(a\\.b|c\\(d\\)|e)"}'
    assert d.substitute('x{e=~"${endpoint:regex}"}', {"endpoint": ["a.b"]}) == r'x{e=~"a\\.b"}'
    assert d.substitute('x{e=~"${endpoint:pipe}"}', values) == 'x{e=~"a.b|c(d)|e"}'
    assert d.substitute("${endpoint:csv}", {"endpoint": ["a", "b"]}) == "a,b"


def test_substitute_does_not_swallow_a_longer_name():
    assert d.substitute("$gpu $gpus", {"gpu": ["0"], "gpus": ["1"]}) == "0 1"


def test_substitute_raises_for_a_variable_without_value():
    with pytest.raises(KeyError, match="endpoint"):
        d.substitute('x{e=~"$endpoint"}', {})


def test_referenced_variables():
    assert d.referenced_variables('x{a="$a", b="${b:regex}", c="[[c]]"}[$__range]') \
        == {"a", "b", "c", "__range"}


def test_grafana_intervals():
    got = d.grafana_intervals(step_s=1.0, scrape_interval_s=2.0, range_s=300)
    assert got["__interval"] == "2000ms" and got["__rate_interval"] == "8000ms"
    assert got["__range"] == "300s"
    assert d.grafana_intervals(30.0, 2.0, 3600)["__rate_interval"] == "32000ms"


def test_label_values_queries():
    assert d.parse_label_values("label_values(endpoint)") == (None, "endpoint")
    assert d.parse_label_values('label_values(nvml_gpu_up{endpoint=~"$endpoint"}, gpu)') \
        == ('nvml_gpu_up{endpoint=~"$endpoint"}', "gpu")
    assert d.parse_label_values("up") is None


# ---- provisioning and compose -------------------------------------------------------------------

def test_datasource_provisioning_has_the_uid_the_panels_use():
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["uid"] == d.DATASOURCE_UID and ds["type"] == "prometheus"
    assert re.fullmatch(r"\d+s", ds["jsonData"]["timeInterval"])


def test_dashboard_provider_points_where_compose_mounts_the_dashboards():
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/llm.yml").read_text())
    (prov,) = provider["providers"]
    assert prov["type"] == "file"
    compose = yaml.safe_load((ROOT / "deploy/compose/monitoring.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert prov["options"]["path"] in mounts
    mounted = (ROOT / "deploy/compose" / mounts[prov["options"]["path"]]).resolve()
    assert mounted == d.DASHBOARDS_DIR
    home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert (mounted / Path(home).relative_to(prov["options"]["path"])).is_file()


def test_compose_mounts_existing_files_read_only_with_pinned_images():
    compose = yaml.safe_load((ROOT / "deploy/compose/monitoring.yml").read_text())
    services = compose["services"]
    assert set(services) == {"prometheus", "grafana"}
    for name, svc in services.items():
        image, _, tag = svc["image"].partition(":")
        assert image in ("prom/prometheus", "grafana/grafana-oss"), name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a version, not {tag!r}"
        assert svc["network_mode"] == "host"
        for mount in svc["volumes"]:
            source, target, *mode = mount.split(":")
            if source.startswith((".", "/")):            # a bind mount of this repository
                assert (ROOT / "deploy/compose" / source).resolve().exists(), mount
                assert mode == ["ro"], f"{name}: mount {mount} read-only"
            else:
                assert source in compose["volumes"], mount
    prom = services["prometheus"]
    config = next(m.split(":")[1] for m in prom["volumes"] if m.endswith("prometheus.yml:ro"))
    assert f"--config.file={config}" in prom["command"]


def test_prometheus_scrapes_the_load_generator():
    doc = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert {"llm-gpu-exporter", "vllm", "llm-loadgen"} <= set(jobs)
    loadgen = jobs["llm-loadgen"]
    assert loadgen["static_configs"][0]["targets"] == [f"127.0.0.1:{series.CLIENT_METRICS_PORT}"]
    assert loadgen["scrape_interval"] in ("1s", "2s")
    # the client's own endpoint label must not be overwritten by a target label
    assert "endpoint" not in loadgen["static_configs"][0].get("labels", {})
