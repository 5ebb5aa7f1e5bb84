"""The leak check (:mod:`leak_check`) on a small suite of tests that leak on purpose.

The attack is a test that leaves a thread, a listening socket or a child process running, and a
module fixture that does not stop its server. The suite runs in a child pytest with the check
(and a 0.3 s grace period), then again with ``-p no:leak-check`` as the control: there every test
passes, so the errors come from the check. Results are read from the JUnit XML report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

CONFTEST = """
from pathlib import Path

from leak_check import LeakChecker


def pytest_configure(config):
    if not config.pluginmanager.is_blocked("leak-check"):
        config.pluginmanager.register(LeakChecker(Path(__file__).parent), "leak-check")
"""

LEAKY = """
import socket
import subprocess
import sys
import threading

KEEP = []


def test_a_daemon_thread():
    stop = threading.Event()
    KEEP.append(stop)
    threading.Thread(target=stop.wait, name="forgotten", daemon=True).start()


def test_a_listening_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    KEEP.append(server)


def test_a_child_process():
    KEEP.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))


def test_clean_thread_server_and_process():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stop.set()
    thread.join()
    server.close()
    child.wait()


def test_zzz_last_one_releases_what_the_others_kept():
    for thing in KEEP:
        getattr(thing, "set", getattr(thing, "close", getattr(thing, "kill", None)))()
"""

MODULE_FIXTURES = """
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest


@pytest.fixture(scope="module")
def pool():
    executor = ThreadPoolExecutor(1, thread_name_prefix="pool")
    executor.submit(lambda: None).result()  # its worker starts here
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def leaky_server():
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="never-stopped", daemon=True).start()
    yield stop  # no teardown: the thread outlives the fixture


def test_more_workers_in_the_pool_are_the_pools(pool):
    extra = ThreadPoolExecutor(1, thread_name_prefix="extra")  # a thread the pool does not own
    extra.submit(lambda: None).result()
    KEEP.append(extra)
    pool.submit(lambda: None).result()


def test_uses_the_leaky_server(leaky_server):
    assert not leaky_server.is_set()


KEEP = []
"""


def run_suite(folder: Path, *extra: str) -> dict[str, str]:
    """Run the suite in ``folder`` in a child pytest; ``{test name: "passed" or its failure text}``."""
    report = folder / "junit.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "GIRAFFE_LEAK_GRACE_S": "0.3"}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                    f"--junitxml={report}", "-o", "junit_family=xunit2", *extra, str(folder)],
                   cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        problems = [p.get("message", "") for p in case if p.tag in ("failure", "error")]
        outcomes[case.get("name")] = " | ".join(problems) or "passed"
    return outcomes


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("leaky")
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_leaky.py").write_text(textwrap.dedent(LEAKY))
    (folder / "test_module_fixtures.py").write_text(textwrap.dedent(MODULE_FIXTURES))
    return folder


@pytest.mark.slow
def test_each_leak_fails_the_test_that_left_it_and_names_it(suite):
    outcomes = run_suite(suite)
    assert "daemon thread 'forgotten'" in outcomes["test_a_daemon_thread"]
    assert "listening socket 127.0.0.1:" in outcomes["test_a_listening_socket"]
    assert "child process" in outcomes["test_a_child_process"] and "time.sleep(60)" in outcomes["test_a_child_process"]
    assert outcomes["test_clean_thread_server_and_process"] == "passed"
    assert outcomes["test_zzz_last_one_releases_what_the_others_kept"] == "passed"
    # a thread the test started beside the module's pool outlives the pool: named after the pool finishes
    # (the pool's own extra workers are the pool's); the module fixture without teardown is named
    last = outcomes["test_uses_the_leaky_server"]
    assert "test_module_fixtures.py::test_more_workers_in_the_pool_are_the_pools left behind" in last
    assert "'extra_0'" in last and "'pool_0'" not in last
    assert "the module-scoped fixture 'leaky_server' left behind: daemon thread 'never-stopped'" in last
    assert outcomes["test_more_workers_in_the_pool_are_the_pools"] == "passed"


@pytest.mark.slow
def test_control_without_the_check_the_same_suite_passes(suite):
    outcomes = run_suite(suite, "-p", "no:leak-check")
    assert set(outcomes.values()) == {"passed"} and len(outcomes) == 7
