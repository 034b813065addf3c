"""`modx up`'s supervision (defect 4): a role whose log cannot be opened still runs and
logs to stderr; a role that dies is restarted (with backoff when it cannot start); the
embedded broker is not stopped while acknowledged pairs are unconsumed."""

from __future__ import annotations

import sys
import threading
import time

from service.infra import start_process
from service.stack import Supervisor, drain
from tests.helpers import consumer_thread, good_value, produce, wait_for


def test_a_role_whose_log_cannot_be_opened_logs_to_stderr(tmp_path, capfd):
    unopenable = tmp_path / "read-only" / "consumer.log"  # its directory does not exist
    proc = start_process([sys.executable, "-c", "print('role is running', flush=True)"], unopenable)
    assert proc.wait(30) == 0
    assert "role is running" in capfd.readouterr().out


def test_supervisor_restarts_a_killed_role_at_once_and_backs_off_a_failing_one(tmp_path):
    roles = {
        "sleeper": [sys.executable, "-c", "import time; time.sleep(60)"],
        "failing": [sys.executable, "-c", "import sys; sys.exit(3)"],
    }
    supervisor = Supervisor(roles, tmp_path, {})
    try:
        supervisor.check()
        sleeper, failing = supervisor.roles["sleeper"], supervisor.roles["failing"]
        first = sleeper.proc.pid
        sleeper.proc.kill()
        sleeper.proc.wait()
        failing.proc.wait()
        supervisor.check()
        assert sleeper.proc.pid != first and sleeper.proc.poll() is None  # kill -9: back at once
        assert failing.proc is None and failing.delay >= 1  # exited by itself at once: waits
        delays = []
        for _ in range(3):
            failing.not_before = 0
            supervisor.check()
            failing.proc.wait()
            supervisor.check()
            delays.append(failing.delay)
        assert delays == sorted(delays) and delays[-1] > delays[0]
    finally:
        supervisor.stop(tuple(roles))


def test_drain_keeps_the_broker_until_every_acknowledged_pair_is_consumed(settings, tmp_path):
    produce(settings, [(f"d{i}".encode(), good_value(f"d{i}")) for i in range(5)])
    supervisor, force = Supervisor({}, tmp_path, {}), threading.Event()
    threading.Timer(2.0, force.set).start()
    t0 = time.monotonic()
    assert drain(settings, supervisor, force, interval_s=0.2) == 5  # no consumer: waited until forced
    assert time.monotonic() - t0 >= 1.9
    with consumer_thread(settings):
        done = []
        waiter = threading.Thread(target=lambda: done.append(drain(settings, supervisor, threading.Event(), 0.2)))
        waiter.start()
        wait_for(lambda: done, timeout_s=60, message="the drain to finish once the consumer caught up")
        assert done == [0]
