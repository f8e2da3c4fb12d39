"""SIGINT and SIGTERM end every node with exit 0, quietly and within 2 s, also while it is still loading
(torch and the model take seconds) and when a second signal follows the first."""

import signal
import subprocess
import time

import pytest

from rosutil import start, write_params

LOADED = {"policy_node": "policy ready", "sim_node": "episode seed", "diagnostics_node": ""}


@pytest.fixture(scope="module")
def params(tiny_checkpoint, tmp_path_factory):
    return write_params(
        tmp_path_factory.mktemp("signals") / "policy.yaml",
        {"checkpoint": str(tiny_checkpoint), "unnorm_key": "sim_panda_lift"},
    )


def _signal_and_wait(child: subprocess.Popen, signals: list[int]) -> tuple[int, float]:
    start_s = time.monotonic()
    for sig in signals:
        child.send_signal(sig)
        time.sleep(0.05)
    code = child.wait(timeout=30)
    return code, time.monotonic() - start_s


@pytest.mark.parametrize(
    ("node", "delay_s", "signals"),
    [
        ("policy_node", 2.5, [signal.SIGINT]),
        ("policy_node", 2.5, [signal.SIGTERM]),
        ("policy_node", 3.5, [signal.SIGINT, signal.SIGINT, signal.SIGTERM]),
        ("sim_node", 2.5, [signal.SIGINT]),
        ("diagnostics_node", 1.5, [signal.SIGTERM, signal.SIGINT]),
    ],
    ids=["policy SIGINT", "policy SIGTERM", "policy three signals", "sim SIGINT", "diagnostics two signals"],
)
def test_a_signal_while_loading_ends_the_node_quietly(ros, params, tmp_path, node, delay_s, signals):
    child = start([node], params, f"/signals_{node}", logs=tmp_path)[node]
    time.sleep(delay_s)
    assert child.poll() is None, (tmp_path / f"{node}.log").read_text()
    code, elapsed = _signal_and_wait(child, signals)
    output = (tmp_path / f"{node}.log").read_text()
    assert code == 0, output
    assert elapsed < 2.5, f"{elapsed:.1f} s to exit"
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    if LOADED[node]:  # the signal came while the node was still loading (else this test tests nothing new)
        assert LOADED[node] not in output, f"{node} had finished loading after {delay_s} s: lower the delay"
