"""Deploy files that cannot run here (no Docker engine, no cluster) are at least well formed."""

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_loadtest_compose_runs_master_and_workers_from_the_same_locustfiles():
    doc = yaml.safe_load((DEPLOY / "compose" / "loadtest.yml").read_text())
    master = " ".join(doc["services"]["master"]["command"])
    worker = " ".join(doc["services"]["worker"]["command"])
    for cmd in (master, worker):
        assert "locustfiles/users.py,locustfiles/sweep.py" in cmd
    assert "--master" in master and "--worker" in worker


def test_kubernetes_manifests_are_consistent():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "locust.yaml").read_text()))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "Deployment", "PersistentVolumeClaim", "Service"]
    service = next(d for d in docs if d["kind"] == "Service")
    worker = next(d for d in docs if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"])
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--master-host") + 1] == service["metadata"]["name"]
    for d in docs:
        if d["kind"] == "Deployment":
            selector = d["spec"]["selector"]["matchLabels"]
            assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
