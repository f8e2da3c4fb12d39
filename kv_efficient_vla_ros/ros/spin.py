"""Running a node as a process: exit 0, quietly and within 2 s, on SIGINT or SIGTERM at any moment.

The process handles the signals itself rather than through rclpy's handlers, which exist only once the
context does: a signal while torch and the model load (seconds) interrupted the node's constructor with
a traceback (-2), killed it (-15), or shut the context down under it (exit 1); and a second Ctrl-C
(``ros2 launch`` forwards one on top of the terminal's) interrupted the teardown. Here a signal during
startup ends the process at once (nothing runs yet that needs tearing down); while spinning it stops the
executor; from then on every signal is ignored and the teardown is bounded.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

SIGNALS = (signal.SIGINT, signal.SIGTERM)
WAKE_S = 0.1  # the executor returns to Python this often: a signal handler runs only between bytecodes
CALLBACKS_S = 1.0  # how long the teardown waits for a callback in flight (an inference tick)
DESTROY_S = 0.5  # destroying can hang in the middleware while peers shut down at the same moment


class _Interrupted(BaseException):
    """A signal during startup (BaseException: no ``except Exception`` in the loading code swallows it)."""


_startup_signal = threading.Event()


def _interrupt(signum, frame) -> None:
    # Raised inside a C extension's module init (scipy, under transformers' lazy imports) the exception comes
    # back as that module's ImportError: the flag, not the exception's type, says a signal ended the startup.
    _startup_signal.set()
    raise _Interrupted


def _handle_signals(handler) -> None:
    for sig in SIGNALS:
        signal.signal(sig, handler)


def run_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 3) -> None:
    """Initialize rclpy, build the node, spin it until SIGINT or SIGTERM, tear down, exit 0.

    Call it first thing in ``main``, and keep the node module's imports light (the policy node imports
    torch in its constructor): a signal before this point still ends the process the default way."""
    _handle_signals(_interrupt)
    stop = threading.Event()
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        _handle_signals(lambda signum, frame: stop.set())
    except BaseException:
        if not _startup_signal.is_set():
            raise
        _handle_signals(signal.SIG_IGN)
        rclpy.try_shutdown()
        _exit()
    try:
        while not stop.is_set() and node.context.ok():
            executor.spin_once(timeout_sec=WAKE_S)
    except ExternalShutdownException:
        pass
    except RCLError:
        # the context can shut down between two waits: rclpy then fails to build its wait set
        if node.context.ok():
            raise
    finally:
        _handle_signals(signal.SIG_IGN)
        _teardown(node, executor)
    _exit()


def _teardown(node: Node, executor) -> None:
    executor.shutdown(timeout_sec=CALLBACKS_S)
    # Destroy the node's handles before the process ends (finalizing them in arbitrary order crashed a
    # node once), in a thread, because destroying can hang in the middleware.
    destroyer = threading.Thread(target=node.destroy_node, daemon=True)
    destroyer.start()
    destroyer.join(timeout=DESTROY_S)
    rclpy.try_shutdown()


def _exit() -> None:
    """Exit 0 now. A callback still in flight (a long inference) would hold a normal interpreter exit until
    it returns; the node's handles and the DDS participant are released by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
