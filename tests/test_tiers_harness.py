"""The tier tests' harness itself: it stops what it started, and finds (and kills) what escaped."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import tiers

ESCAPE = """
import os, sys, time
if os.fork() == 0:
    os.setsid()                      # leaves the process group, like a daemon
    if os.fork() == 0:
        time.sleep(120)              # the grandchild is orphaned: reparented to the subreaper
    os._exit(0)
time.sleep(120)
"""


def _escaped_grandchild(stack: tiers.Stack, escaper: int) -> int | None:
    """The escaper's grandchild once its parent has exited and it was reparented to us."""
    table = tiers._proc_table()
    for pid, (ppid, cmd) in table.items():
        spawned = any(p.popen.pid == pid for p in stack.procs)
        if ppid == os.getpid() and pid != escaper and not spawned and "time.sleep(120)" in cmd:
            return pid
    return None


def test_stack_stops_groups_and_catches_escapees(tmp_path: Path) -> None:
    stack = tiers.Stack(root=tmp_path)
    try:
        plain = stack.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])
        escaping = stack.spawn("escaper", [sys.executable, "-c", ESCAPE])
        deadline = time.monotonic() + 10
        while (orphan := _escaped_grandchild(stack, escaping.popen.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orphan is not None
        tree = stack.tree()
        assert {plain.popen.pid, escaping.popen.pid, orphan} <= set(tree), tree
    finally:
        leftovers = stack.close()
    assert len(leftovers) == 1 and leftovers[0].startswith(f"{orphan} "), leftovers
    assert stack.tree() == {}
    assert all(not tiers._alive(pid) for pid in tree)


def test_missing_services_skip_with_a_reason_but_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiers, "pg_bindir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"PostgreSQL server binaries.*install-services"):
        tiers.require()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: tier tests never skip"):
        tiers.require()
