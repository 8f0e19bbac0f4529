"""The watch the fault suite relies on can see a controller that stops answering."""

from __future__ import annotations

import signal
import time

from tests.conftest import FleetCli, ServeProcess
from tests.faults.conftest import HealthWatch, read_results


def test_health_watch_measures_a_stopped_server(tmp_path, tmp_source):
    serve = ServeProcess(FleetCli(tmp_path / "data", tmp_source, tmp_path))
    serve.start()
    try:
        with HealthWatch(serve, "watch sees SIGSTOP") as watch:
            time.sleep(1)
            serve.proc.send_signal(signal.SIGSTOP)  # the whole process stops answering
            time.sleep(3)
            serve.proc.send_signal(signal.SIGCONT)
            time.sleep(1.5)
    finally:
        serve.proc.send_signal(signal.SIGCONT)
        serve.stop()
    assert 2.5 <= watch.longest_silence < 6, watch.longest_silence
    assert watch.polls >= 4
    assert read_results()[-1]["label"] == "watch sees SIGSTOP"
