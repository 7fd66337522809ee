"""A product process that does not become ready is stopped by the readiness wait
itself, so no caller (``with`` or ``start()``) leaves it running."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from smart_sim.processes import ManagedProcess, ProcessError
from tests.waiting import eventually


def test_a_process_not_ready_by_its_deadline_is_stopped_and_its_log_reported(
    tmp_path: Path,
) -> None:
    script = "import time; print('starting up', flush=True); time.sleep(60)"
    process = ManagedProcess("slow", [sys.executable, "-c", script], tmp_path)
    process.start()
    eventually(lambda: "starting up" in process.log_tail(), what="the first log line")
    with pytest.raises(ProcessError, match=r"slow did not answer within 1 s:\n.*starting up"):
        process.wait_until(lambda: False, timeout=1, what="answer")
    assert process.process is not None
    assert process.process.poll() is not None, "the process still runs after its failed start"


def test_a_process_that_exits_before_it_is_ready_is_reported_with_its_log(
    tmp_path: Path,
) -> None:
    script = "import sys; print('bad setting', flush=True); sys.exit(2)"
    process = ManagedProcess("early", [sys.executable, "-c", script], tmp_path)
    with (
        pytest.raises(ProcessError, match=r"early exited before it answer:\n.*bad setting"),
        process,
    ):
        process.wait_until(lambda: False, timeout=30, what="answer")
    assert process.process is not None and process.process.returncode == 2
