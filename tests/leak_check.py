"""A pytest plugin that fails a test which leaves a thread, a listening socket or a child process behind.

Registered by ``tests/conftest.py`` under the name ``leak-check`` (``-p no:leak-check`` turns it off).

What counts as a leak, checked per test after its teardown (and after the fixtures that test tore
down, so a module fixture's server is checked when its module ends):

* a Python thread (daemon or not) that did not exist when the test's setup began;
* a listening TCP socket of this process (psutil) that did not exist then;
* a child process of this process, at any depth (Chromium, Xvfb, the Playwright driver, uvicorn),
  not a zombie, that did not exist then.

Wider-scoped fixtures are accounted for explicitly, not by loosening the check:

* every fixture defined in the test directory is watched while it is set up, and what it starts
  (a server thread, a browser's processes) is owned by it. It may outlive the test that set it up
  only while the fixture is active; when pytest finishes the fixture it must be gone, or the test
  whose teardown finished it fails, naming the fixture.
* what a test starts in such a fixture's objects (a server's worker threads, a browser's renderer
  processes) may outlive the test only if the test uses a module- or session-scoped fixture that
  owns resources; it is then checked when those fixtures finish, and a leak fails the test whose
  teardown finished them, naming the test that started it. A test that uses no such fixture is
  checked at once.

Things being shut down get a grace period (``GIRAFFE_LEAK_GRACE_S``, default 5 s) before they
count: a test fails only if the resource is still there when the grace period ends, so a clean test
costs a few milliseconds and a leaking one the grace period. Leaked child processes are killed
after they are reported, so a failing run leaves no browser behind.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

__all__ = ["LeakChecker", "Resource", "snapshot"]

#: how long a resource may take to go away after the test (or fixture) that started it ends, seconds
GRACE_S = float(os.environ.get("GIRAFFE_LEAK_GRACE_S", "5"))
_POLL_S = 0.05
_ME = psutil.Process()


@dataclass(frozen=True)
class Resource:
    """One thing a test can leave behind: ``kind`` is "thread", "listener" or "process"; ``key``
    identifies it (a thread object's id, (fd, address), (pid, start time)); ``label`` describes it."""

    kind: str
    key: object
    label: str


def _threads() -> dict[object, tuple[threading.Thread, str]]:
    found = {}
    for thread in threading.enumerate():
        if thread is threading.main_thread() or isinstance(thread, threading._DummyThread):
            continue  # _DummyThread: a thread started outside `threading`, which Python cannot join
        target = getattr(thread, "_target", None)
        where = getattr(target, "__qualname__", type(thread).__qualname__)
        kind = "daemon thread" if thread.daemon else "thread"
        found[("thread", id(thread), thread.ident)] = (thread, f"{kind} {thread.name!r} ({where})")
    return found


def _listeners() -> dict[object, str]:
    found = {}
    for conn in _ME.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN:
            address = f"{conn.laddr.ip}:{conn.laddr.port}"
            found[("listener", conn.fd, address)] = f"listening socket {address} (fd {conn.fd})"
    return found


def _children() -> dict[object, str]:
    found = {}
    for child in _ME.children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue  # exited; only its exit status is left
            key = ("process", child.pid, child.create_time())
            found[key] = f"child process {child.pid} {' '.join(child.cmdline()[:3])[:160]!r}"
        except psutil.Error:
            continue  # it ended while we looked
    return found


def snapshot() -> dict[object, Resource]:
    """Every thread, listening socket and live child process of this process now, by key."""
    out: dict[object, Resource] = {}
    for key, (_, label) in _threads().items():
        out[key] = Resource("thread", key, label)
    for source in (_listeners, _children):
        for key, label in source().items():
            out[key] = Resource(key[0], key, label)  # type: ignore[index]
    return out


def _still_there(resources: Iterable[Resource], timeout_s: float) -> list[Resource]:
    """The ``resources`` still present after waiting up to ``timeout_s`` seconds for them to go."""
    pending = {r.key: r for r in resources}
    deadline = time.monotonic() + timeout_s
    while pending:
        alive = snapshot()
        pending = {k: r for k, r in pending.items() if k in alive}
        if not pending or time.monotonic() >= deadline:
            break
        threads = _threads()
        for key in pending:
            if key in threads:  # a thread that is finishing: wait for it rather than poll
                threads[key][0].join(timeout=max(0.0, min(_POLL_S, deadline - time.monotonic())))
        time.sleep(_POLL_S)
    return list(pending.values())


def _kill_processes(resources: Iterable[Resource]) -> None:
    """End leaked child processes (they are this test run's own), so a failing run leaves none."""
    procs = []
    for r in resources:
        if r.kind != "process":
            continue
        _, pid, started = r.key  # type: ignore[misc]
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started:
                proc.terminate()
                procs.append(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=3)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue


def _describe(resources: Iterable[Resource]) -> str:
    return "; ".join(sorted(r.label for r in resources))


@dataclass
class _Deferred:
    """Resources a test started that outlived it while it used wider-scoped resource fixtures:
    checked when the last of ``waiting_for`` (fixture ids, named ``fixtures``) finishes."""

    test: str
    fixtures: list[str]
    waiting_for: set[int]
    resources: list[Resource] = field(default_factory=list)


class LeakChecker:
    """The plugin (see the module doc). ``root``: fixtures defined under it are watched."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._owned: dict[int, tuple[str, str, set[object]]] = {}  # id(fixturedef) -> (name, scope, keys)
        self._setting_up: list[set[object]] = []  # keys claimed by nested fixture setups
        self._pending: list[str] = []  # fixture leaks found during the current test's phases
        self._reported: set[object] = set()
        self._baseline: dict[object, Resource] = {}
        self._deferred: list[_Deferred] = []

    # ---- fixtures ---------------------------------------------------------------------------

    def _watched(self, fixturedef: pytest.FixtureDef) -> bool:
        code = getattr(fixturedef.func, "__code__", None)
        return code is not None and Path(code.co_filename).resolve().is_relative_to(self.root)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Iterator[None]:
        if not self._watched(fixturedef):
            return (yield)
        before = snapshot()
        self._setting_up.append(set())
        try:
            return (yield)
        finally:
            nested = self._setting_up.pop()
            started = set(snapshot()) - set(before) - nested
            if self._setting_up:
                self._setting_up[-1] |= started | nested
            self._owned[id(fixturedef)] = (fixturedef.argname, fixturedef.scope, started)

    @pytest.hookimpl
    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> None:
        owned = self._owned.pop(id(fixturedef), None)
        if owned is None:
            return
        name, scope, keys = owned
        self._report(keys, f"the {scope}-scoped fixture {name!r} left behind")
        for deferred in list(self._deferred):
            deferred.waiting_for.discard(id(fixturedef))
            if not deferred.waiting_for:
                self._deferred.remove(deferred)
                self._report({r.key for r in deferred.resources}, f"{deferred.test} left behind (after the "
                             f"fixtures it used, {', '.join(deferred.fixtures)}, finished)")

    def _report(self, keys: Iterable[object], what: str) -> None:
        """Queue a failure for those of ``keys`` still present after the grace period (killing processes)."""
        now = snapshot()
        leaked = _still_there([now[k] for k in keys if k in now and k not in self._reported], GRACE_S)
        if leaked:
            self._reported |= {r.key for r in leaked}
            self._pending.append(f"{what}: {_describe(leaked)}")
            _kill_processes(leaked)

    # ---- tests ------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        self._baseline = snapshot()
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        try:
            result = yield
        except BaseException as exc:  # the teardown failed: keep its error, add the leaks to it
            try:
                self._check_test(item)
            except pytest.fail.Exception as leak:
                if hasattr(exc, "add_note"):  # Python 3.11+
                    exc.add_note(str(leak))
            raise
        self._check_test(item)
        return result

    def _wider_owners(self, item: pytest.Item) -> dict[int, str]:
        """The module- or session-scoped fixtures ``item`` uses that own resources, by id: name."""
        used = set(getattr(item, "fixturenames", ()))
        return {fid: name for fid, (name, scope, keys) in self._owned.items()
                if keys and scope != "function" and name in used}

    def _check_test(self, item: pytest.Item) -> None:
        """Fail ``item`` for what it left behind (or defer it, see the module doc) and for fixture leaks."""
        active = set().union(*(keys for _, _, keys in self._owned.values()))
        now = snapshot()
        new = [r for k, r in now.items() if k not in self._baseline and k not in active and k not in self._reported]
        owners = self._wider_owners(item)
        if new and owners:
            self._deferred.append(_Deferred(item.nodeid, sorted(owners.values()), set(owners), new))
        elif new:
            self._report([r.key for r in new], f"{item.nodeid} left behind")
        problems, self._pending = self._pending, []
        if problems:
            pytest.fail("resource leak: " + " | ".join(problems) + " (stop it in the test's finally or the "
                        "fixture's teardown)", pytrace=False)
