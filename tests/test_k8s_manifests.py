"""deploy/k8s: every document is valid against the Kubernetes API schema (offline, with the
schemas kubernetes-validate ships), and the manifests agree with each other and with the suite:
the Job runs the campaign with flags it accepts, its Service selects the Job's pod, the workers
run locustfiles.remote_worker against that Service (Locust's port and the live-metrics port,
where each run's config is served), results land on the PersistentVolumeClaim, the Secret holds
no key.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from core import secrets
from core.config import load_config
from locustfiles import remote_worker

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are written for, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# flags of the campaign for remote workers (being added to locustfiles.campaign)
REMOTE_WORKER_FLAGS = ("--expect-workers", "--master-bind-host", "--master-bind-port")
IMAGE = "llm-loadsuite:latest"


def documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


DOCS = documents()


def one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} documents in deploy/k8s"
    return found[0]


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def pod_labels(doc: dict) -> dict:
    return doc["metadata"]["labels"] if doc["kind"] == "Pod" else \
        doc["spec"]["template"]["metadata"]["labels"]


def workloads() -> list[dict]:
    return [d for _, d in DOCS if d["kind"] in ("Job", "Deployment", "Pod")]


def command_line(doc: dict) -> list[str]:
    """The container's command and args as words (a `sh -c` script split into words)."""
    container = pod_spec(doc)["containers"][0]
    words = list(container.get("command", [])) + list(container.get("args", []))
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(re.sub(r"[;&]", " ", " ".join(words[2:])))
    return words


def flag(words: list[str], name: str) -> str:
    assert name in words, f"{name} not in {words}"
    return words[words.index(name) + 1]


def campaign_job() -> dict:
    return one("Job")


REMOTE_WORKER = ["python", "-m", "locustfiles.remote_worker"]


def remote_worker_options(doc: dict):
    """A worker Deployment's remote_worker options, parsed by remote_worker's own parser."""
    words = command_line(doc)
    assert words[:3] == REMOTE_WORKER, f"the workers should run remote_worker: {words}"
    return remote_worker.build_parser().parse_args(words[3:])


def remote_worker_files() -> list[str]:
    """The locustfiles remote_worker starts its workers on, relative to the repository root."""
    return [str(Path(f).relative_to(ROOT)) for f in remote_worker.LOCUSTFILES.split(",")]


def service_ports(service: dict) -> set[int]:
    ports = {p["port"] for p in service["spec"]["ports"]}
    assert ports == {p["targetPort"] for p in service["spec"]["ports"]}, service["spec"]["ports"]
    return ports


def live_metrics(doc: dict) -> tuple[str, int]:
    """Where a master serves its live metrics and its config: (host, port)."""
    words = command_line(doc)
    if doc["kind"] == "Job":   # the campaign passes them on to each run (its defaults included)
        from locustfiles.campaign_args import build_parser
        from locustfiles.cliargs import live_flag_args
        args = words[1:] if words[0] == "llm-loadtest" else words[3:]
        live = live_flag_args(build_parser().parse_args(args))
        return live[3], int(live[1])
    return flag(words, "--llm-metrics-host"), int(flag(words, "--llm-metrics-port"))


@pytest.fixture(scope="module")
def campaign_flags() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "locustfiles.campaign", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.stdout))


def test_the_old_single_file_is_gone_and_every_file_has_documents():
    assert not (K8S / "locust.yaml").exists()
    assert {name for name, _ in DOCS} == {p.name for p in K8S.glob("*.y*ml")}
    kinds = sorted(d["kind"] for _, d in DOCS)
    for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim", "Job", "Service", "Deployment"):
        assert kind in kinds, f"no {kind} in deploy/k8s"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name,doc", DOCS, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}"
                                                for n, d in DOCS])
def test_every_document_validates_against_the_kubernetes_schema(name, doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is not valid Kubernetes "
                    f"{version}: {exc.caught.message} at {list(exc.caught.absolute_path)}")


def test_the_validator_rejects_a_misspelled_field():
    # strict validation is not a no-op: a field Kubernetes does not know fails
    job = yaml.safe_load(yaml.safe_dump(campaign_job()))
    job["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[0], strict=True)


def test_the_job_runs_the_campaign_with_flags_it_accepts(campaign_flags):
    words = command_line(campaign_job())
    assert words[0] == "llm-loadtest" or words[:3] == ["python", "-m", "locustfiles.campaign"], words
    used = {w for w in words if w.startswith("--")}
    unknown = used - campaign_flags - set(REMOTE_WORKER_FLAGS)
    assert not unknown, f"the campaign does not accept {sorted(unknown)}"


def test_the_job_uses_the_campaigns_remote_worker_flags(campaign_flags):
    words = command_line(campaign_job())
    for name in REMOTE_WORKER_FLAGS:
        assert name in words, f"the Job should pass {name}"
        assert name in campaign_flags, f"the campaign does not accept {name}"


def test_the_service_selects_the_jobs_pod_on_the_master_port():
    job = campaign_job()
    service = one("Service", "llm-campaign")
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_labels(job).items(), (selector, pod_labels(job))
    port = int(flag(command_line(job), "--master-bind-port"))
    assert port in [p["port"] for p in service["spec"]["ports"]]
    assert port in [p["targetPort"] for p in service["spec"]["ports"]]
    assert flag(command_line(job), "--master-bind-host") == "0.0.0.0"
    # no other workload carries the same labels (the Service would send workers there too)
    others = [d for d in workloads() if d is not job and selector.items() <= pod_labels(d).items()]
    assert not others, [d["metadata"]["name"] for d in others]


MASTERS = [("llm-campaign-worker", "Job", "llm-campaign"),
           ("llm-locust-ui-worker", "Deployment", "llm-locust-ui")]


@pytest.mark.parametrize("worker_name,master_kind,master_name", MASTERS)
def test_workers_run_remote_worker_against_their_masters_service(worker_name, master_kind,
                                                                 master_name):
    worker = one("Deployment", worker_name)
    options = remote_worker_options(worker)
    service = one("Service", master_name)
    master = one(master_kind, master_name)
    # the Locust port and the config port of the master, both through its Service
    assert options.master_host == master_name
    assert options.master_port == int(flag(command_line(master), "--master-bind-port"))
    assert options.master_port in service_ports(service)
    assert options.config_port == live_metrics(master)[1] == 9410
    assert options.config_port in service_ports(service)
    # every run's config from the master (no local file), until stopped, one process per pod
    assert options.endpoints_file is None and options.runs == 0 and options.processes == 1
    for path in remote_worker_files():   # the locustfiles remote_worker starts exist
        assert (ROOT / path).is_file(), path
    sel = worker["spec"]["selector"]["matchLabels"]
    assert sel.items() <= pod_labels(worker).items()


@pytest.mark.parametrize("master_kind,master_name", [(k, n) for _, k, n in MASTERS])
def test_the_masters_serve_live_metrics_and_config_through_their_service(master_kind,
                                                                         master_name):
    master = one(master_kind, master_name)
    host, port = live_metrics(master)
    assert host == "0.0.0.0", f"{master_name}: the workers reach the live-metrics port from pods"
    service = one("Service", master_name)
    assert port in service_ports(service)
    assert "llm-metrics" in [p["name"] for p in service["spec"]["ports"] if p["port"] == port]
    container = pod_spec(master)["containers"][0]
    assert port in [p["containerPort"] for p in container["ports"]]
    annotations = master["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == port


def test_no_worker_runs_a_hand_made_restart_loop():
    # remote_worker keeps the workers across runs; a shell loop around locust --worker is gone
    for doc in workloads():
        container = pod_spec(doc)["containers"][0]
        assert container.get("command", [])[:2] != ["sh", "-c"], doc["metadata"]["name"]


def test_the_ui_master_and_its_workers_load_the_same_user_classes():
    master = command_line(one("Deployment", "llm-locust-ui"))
    remote_worker_options(one("Deployment", "llm-locust-ui-worker"))
    assert "--master" in master
    # remote_worker's workers load the user classes (and the load shape, which a worker ignores)
    assert set(flag(master, "-f").split(",")) <= set(remote_worker_files())
    assert flag(master, "--web-host") == "0.0.0.0"
    service = one("Service", "llm-locust-ui")
    assert service["spec"]["selector"].items() <= \
        pod_labels(one("Deployment", "llm-locust-ui")).items()
    assert int(flag(master, "--web-port")) in [p["port"] for p in service["spec"]["ports"]]


def test_the_job_waits_for_as_many_workers_as_the_deployment_runs():
    expected = int(flag(command_line(campaign_job()), "--expect-workers"))
    assert one("Deployment", "llm-campaign-worker")["spec"]["replicas"] == expected


def test_the_secret_holds_no_real_looking_key():
    secret = one("Secret")
    values = dict(secret.get("stringData") or {})
    for name, value in (secret.get("data") or {}).items():
        values[name] = base64.b64decode(value).decode()
    assert values, "the Secret names no key"
    for name, value in values.items():
        assert not secrets.looks_like_key(value), f"{name} looks like a real key"
        assert value == "", f"{name}: only empty placeholders in the file (kubectl create secret)"
    for path in K8S.glob("*.y*ml"):   # comments and every other document too
        assert not secrets.looks_like_key(path.read_text()), f"{path.name} has a key in it"


def test_the_configmap_is_a_valid_config_whose_keys_come_from_the_secret(tmp_path):
    config_map = one("ConfigMap")
    (tmp_path / "endpoints.toml").write_text(config_map["data"]["endpoints.toml"])
    config = load_config(str(tmp_path / "endpoints.toml"))   # refuses anything key-like
    key_vars = {e.api_key_env for e in config.endpoints if e.api_key_env}
    assert key_vars <= set(one("Secret")["stringData"]), key_vars


def test_every_pod_gets_the_config_the_keys_and_the_image():
    config_map, secret = one("ConfigMap"), one("Secret")
    for doc in workloads():
        spec = pod_spec(doc)
        name = doc["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("enableServiceLinks") is False, name
        container = spec["containers"][0]
        assert container["image"] == IMAGE, name
        if doc["kind"] == "Pod":
            continue   # the results reader needs neither config nor keys
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        config_path = Path(env["LOCUST_ENDPOINTS_FILE"])
        mounted = volumes[mounts[str(config_path.parent)]]
        assert mounted["configMap"]["name"] == config_map["metadata"]["name"], name
        assert config_path.name in config_map["data"], name
        refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
        assert refs == [secret["metadata"]["name"]], name


def _workdir() -> str:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [line.split()[1] for line in lines if line.startswith("WORKDIR")][-1]


def test_results_land_on_the_persistent_volume_claim():
    claim = one("PersistentVolumeClaim")["metadata"]["name"]
    job = campaign_job()
    results_dir = flag(command_line(job), "--results-dir")
    # the Job's --results-dir, the UI master's default (results/ in the image's WORKDIR) and the
    # reader all mount the claim there
    assert results_dir == f"{_workdir()}/results"
    for doc in (job, one("Deployment", "llm-locust-ui"), one("Pod", "llm-results-reader")):
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert results_dir in mounts, doc["metadata"]["name"]
        assert volumes[mounts[results_dir]]["persistentVolumeClaim"]["claimName"] == claim
        assert spec["securityContext"].get("fsGroup") == spec["securityContext"]["runAsUser"]
