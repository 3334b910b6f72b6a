"""The container image: the Dockerfile passes hadolint and keeps the rules the deploy files rely
on (non-root user, slim pinned base, the suite installed from the tree, a writable results/).
`docker build` itself runs only where a Docker daemon is reachable (not on the project's machines).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
    return out


def ignored() -> set[str]:
    return {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")}


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: it comes with the test extra "
                    "(pip install -e '.[test]', which make test runs)")
    return found


def test_dockerfile_passes_hadolint():
    # any finding, down to 'info', fails; exceptions would be listed, each with its reason, in
    # .hadolint.yaml (read from the repository root)
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info",
                             "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    # the lint step is not a no-op: a root image from an unpinned base fails
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install locust\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "DL3006" in result.stdout


def test_base_image_is_slim_python_pinned_to_a_minor_version():
    bases = [args.split()[0] for keyword, args in instructions() if keyword == "FROM"]
    assert bases, "no FROM"
    final = bases[-1]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", final), (
        f"base {final!r}: use python:3.X-slim (a pinned minor version, slim)")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.search(r">=\s*3\.(\d+)", requires).group(1)
    assert int(final.split(":")[1].split("-")[0].split(".")[1]) >= int(minimum), requires


def test_runs_as_a_non_root_user():
    users = [args for keyword, args in instructions() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]}"
    # numeric, so Kubernetes' runAsNonRoot can check it; deploy/k8s runs as the same uid
    assert user.isdigit(), f"USER {users[-1]}: give the uid, not a name"
    manifests = "\n".join(p.read_text() for p in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")))
    assert f"runAsUser: {user}" in manifests


def test_installs_the_suite_from_the_tree_without_the_test_extra():
    runs = [args for keyword, args in instructions() if keyword == "RUN"]
    installs = [cmd for args in runs for cmd in args.split("&&") if "pip install" in cmd]
    assert installs, "no pip install step"
    for cmd in installs:
        words = cmd.split()
        assert "--no-cache-dir" in words, cmd
        assert "." in words[words.index("install"):], f"{cmd!r}: install the suite (.)"
        assert "[test]" not in cmd, f"{cmd!r}: the image needs no test packages"


def test_workdir_has_a_results_folder_the_user_can_write():
    workdirs = [args for keyword, args in instructions() if keyword == "WORKDIR"]
    assert workdirs, "no WORKDIR"
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "mkdir -p results" in runs and re.search(r"chown \S+ results", runs), runs
    # the locustfiles are started by relative path from the WORKDIR (compose, Kubernetes)
    copies = [args for keyword, args in instructions() if keyword == "COPY"]
    assert any(c.split()[0] == "." for c in copies) or any("locustfiles" in c for c in copies)


def test_default_command_is_a_console_script_of_the_suite():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = [args for keyword, args in instructions() if keyword in ("CMD", "ENTRYPOINT")]
    assert commands, "no CMD or ENTRYPOINT"
    first = re.findall(r'"([^"]+)"', commands[0])
    assert first and first[0] in scripts, f"{commands[0]}: use one of {sorted(scripts)}"


def test_dockerignore_keeps_venvs_results_and_caches_out_but_not_the_sources():
    names = ignored()
    for required in (".venv", ".venv-vllm", "results", ".cache", ".git", "**/__pycache__"):
        assert required in names, f".dockerignore should exclude {required}"
    # what `pip install .` needs must stay in the build context
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], "endpoints.toml",
              *(p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"])}
    assert not needed & names, f".dockerignore excludes {sorted(needed & names)}"
    assert not {"*", "*.py", "**/*.py"} & names


def _docker_unavailable() -> str:
    if shutil.which("docker") is None:
        return "docker is not installed (the project's machines have no Docker)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "docker is installed but its daemon does not answer"
    if info.returncode != 0:
        return "docker is installed but its daemon is not reachable"
    return ""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docker_build_makes_an_image_that_runs_as_non_root():
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    tag = "llm-loadsuite:test"
    build = subprocess.run(["docker", "build", "-t", tag, "."], cwd=ROOT, capture_output=True,
                           text=True, timeout=1700)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    try:
        help_ = subprocess.run(["docker", "run", "--rm", tag], capture_output=True, text=True,
                               timeout=120)
        assert help_.returncode == 0 and "--endpoints-file" in help_.stdout, help_.stderr
        uid = subprocess.run(["docker", "run", "--rm", tag, "id", "-u"], capture_output=True,
                             text=True, timeout=60)
        assert uid.stdout.strip() not in ("", "0"), uid.stdout + uid.stderr
        locust = subprocess.run(["docker", "run", "--rm", tag, "locust", "-f",
                                 "locustfiles/users.py,locustfiles/sweep.py", "--help"],
                                capture_output=True, text=True, timeout=120)
        assert locust.returncode == 0 and "--run-dir" in locust.stdout, locust.stderr[-4000:]
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)
