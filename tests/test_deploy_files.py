"""Deploy files that cannot run here (no Docker engine, no cluster) are at least well formed.

The Kubernetes manifests have their own tests (schema and consistency): test_k8s_manifests.py;
the image: test_container.py.
"""

import argparse
import re
import shlex
from pathlib import Path

import yaml

from locustfiles import remote_worker

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
REMOTE_WORKER = "python -m locustfiles.remote_worker"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "loadtest.yml").read_text())


def command(service: dict) -> str:
    return " ".join(service["command"])


def remote_worker_options(service: dict) -> argparse.Namespace:
    """The worker service's remote_worker options, parsed by remote_worker's own parser."""
    words = shlex.split(command(service))
    assert words[:3] == REMOTE_WORKER.split(), words
    return remote_worker.build_parser().parse_args(words[3:])


def remote_worker_files() -> list[str]:
    """The locustfiles remote_worker starts its workers on, relative to the repository root."""
    return [str(Path(f).relative_to(ROOT)) for f in remote_worker.LOCUSTFILES.split(",")]


def test_loadtest_compose_runs_the_suites_image_not_a_pip_install():
    services = compose()["services"]
    assert set(services) >= {"master", "worker", "master-ui", "worker-ui"}
    for name, service in services.items():
        assert service["image"] == "llm-loadsuite:latest", name
        assert service["build"]["context"] == "../..", name
        assert "pip install" not in command(service), name


def test_loadtest_compose_master_runs_the_campaign_for_its_workers():
    services = compose()["services"]
    master = command(services["master"])
    assert "llm-loadtest" in master and "--results-dir /app/results" in master
    assert "--expect-workers ${WORKERS:-2}" in master
    assert services["worker"]["deploy"]["replicas"] == "${WORKERS:-2}"
    # the workers run remote_worker against the master: its Locust port and its config port
    worker = remote_worker_options(services["worker"])
    port = int(re.search(r"--master-bind-port (\d+)", master).group(1))
    config_port = int(re.search(r"--llm-metrics-port (\d+)", master).group(1))
    assert (worker.master_host, worker.master_port) == ("127.0.0.1", port)
    assert worker.config_port == config_port == 9410
    assert "--llm-metrics-host 0.0.0.0" in master   # workers on other hosts fetch it too
    assert worker.processes == 1   # one process per replica: --expect-workers counts processes
    assert "../../results:/app/results" in services["master"]["volumes"]
    assert services["master"]["profiles"] == services["worker"]["profiles"] == ["campaign"]


def test_loadtest_compose_ui_master_and_workers_share_the_user_classes():
    services = compose()["services"]
    master = command(services["master-ui"])
    assert "--master" in master and "--web-host 0.0.0.0" in master
    files = re.search(r"-f (\S+)", master).group(1)
    assert files == "locustfiles/users.py"
    # remote_worker's workers load the user classes (and the load shape, which a worker ignores)
    assert set(files.split(",")) <= set(remote_worker_files())
    worker = remote_worker_options(services["worker-ui"])
    port = int(re.search(r"--master-bind-port (\d+)", master).group(1))
    config_port = int(re.search(r"--llm-metrics-port (\d+)", master).group(1))
    assert (worker.master_host, worker.master_port, worker.config_port) == \
        ("127.0.0.1", port, config_port)
    assert services["master-ui"]["profiles"] == services["worker-ui"]["profiles"] == ["ui"]


def test_loadtest_compose_workers_come_back_after_each_run():
    # a Locust worker exits when its master quits (after every campaign run): remote_worker
    # starts it again for the next run, on that run's config fetched from the master
    for name in ("worker", "worker-ui"):
        service = compose()["services"][name]
        script = command(service)
        assert "while :" not in script and "locust " not in script, name   # no hand-made loop
        worker = remote_worker_options(service)
        assert worker.runs == 0, name                 # until stopped, not for a number of runs
        assert worker.endpoints_file is None, name    # the master's config, not a local file
    assert remote_worker_files() == ["locustfiles/users.py", "locustfiles/sweep.py"]
