"""The process-tree collector against real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psutil
import pytest

from exporters.process import ProcessSelector, ProcessTreeCollector

from support import wait_until

CHILD = ("import subprocess, sys, time\n"
         "kids = [subprocess.Popen(['sleep', '30']) for _ in range(2)]\n"
         "x = bytearray(16 << 20)\n"  # 16 MiB so the parent's RSS is clearly > 0
         "print('ready', flush=True)\n"
         "time.sleep(30)\n")


@pytest.fixture
def tree():
    """A python parent (with a unique marker in its argv) and two `sleep` children."""
    marker = f"proc-tree-test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, marker], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        wait_until(lambda: len(psutil.Process(proc.pid).children()) == 2, 5, "two children",
                   retry_on=(Exception,))
        yield proc, marker
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(5)


def _samples(collector: ProcessTreeCollector) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels["selector"]): s.value
            for family in collector.collect() for s in family.samples}


def test_select_by_pid_counts_the_tree(tree) -> None:
    proc, _ = tree
    collector = ProcessTreeCollector([ProcessSelector.for_pid(proc.pid)])
    usage = collector.usage(ProcessSelector.for_pid(proc.pid))
    assert usage.count == 3
    assert usage.rss_bytes > 16 << 20
    assert usage.cpu_seconds >= 0.0
    got = _samples(collector)
    label = f"pid:{proc.pid}"
    assert got[("server_processes", label)] == 3
    assert got[("server_process_resident_memory_bytes", label)] > 16 << 20
    assert ("server_process_cpu_seconds_total", label) in got


def test_select_by_regex_includes_descendants(tree) -> None:
    proc, marker = tree
    selector = ProcessSelector.for_regex(marker)
    usage = ProcessTreeCollector([selector]).usage(selector)
    assert usage.count == 3  # the parent matches; the `sleep` children come as descendants
    assert usage.rss_bytes > 16 << 20


def test_cpu_counter_grows_with_work() -> None:
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nt=time.process_time()\n"
                             "while time.process_time()-t < 0.3: pass\ntime.sleep(30)"])
    try:
        selector = ProcessSelector.for_pid(busy.pid)
        collector = ProcessTreeCollector([selector])
        wait_until(lambda: collector.usage(selector).cpu_seconds >= 0.3, 10, "0.3 s of CPU",
                   retry_on=(Exception,))
    finally:
        busy.kill()
        busy.wait(5)


def test_nothing_matched_gives_count_0_and_no_cpu_or_rss() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    selectors = [ProcessSelector.for_pid(gone.pid),
                 ProcessSelector.for_regex("no-such-process-" + uuid.uuid4().hex)]
    got = _samples(ProcessTreeCollector(selectors))
    assert got == {("server_processes", f"pid:{gone.pid}"): 0.0,
                   ("server_processes", selectors[1].label): 0.0}


def test_exporter_excludes_itself() -> None:
    # this test process's own command line matches; it must not be selected
    me = " ".join(psutil.Process().cmdline())
    selector = ProcessSelector.for_regex(".")  # matches every process with a command line
    collector = ProcessTreeCollector([selector])
    roots = selector.roots({os.getpid()})
    assert os.getpid() not in {p.pid for p in roots}
    assert me  # sanity: we do have a command line that "." would match
    assert collector.usage(ProcessSelector.for_pid(os.getpid())).count == 0


def test_bad_regex_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        ProcessSelector.for_regex("(")


def test_exited_child_leaves_the_count_but_not_the_cpu_total(tree) -> None:
    proc, _ = tree
    selector = ProcessSelector.for_pid(proc.pid)
    collector = ProcessTreeCollector([selector])
    before = collector.usage(selector)
    psutil.Process(proc.pid).children()[0].kill()  # becomes a zombie: the parent never reaps
    after = wait_until(lambda: (u := collector.usage(selector)).count == 2 and u, 5, "a count of 2",
                       retry_on=(Exception,))
    assert after.cpu_seconds >= before.cpu_seconds
    assert 0 < after.rss_bytes <= before.rss_bytes
