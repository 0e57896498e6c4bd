"""Real `mitmdump` (and `tokenaddons run`) subprocesses running the bundle, for the demo, tests and benchmarks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LAUNCHER = Path(__file__).with_name("launcher.py")
REPLAY_LAUNCHER = Path(__file__).with_name("replay_launcher.py")
MITMDUMP = "from mitmproxy.tools.main import mitmdump; mitmdump()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class Service:
    """A process serving on a loopback port: started, waited for, stopped with
    SIGINT (so addons flush: the event store drains its queue)."""

    def __init__(self, args: list[str], workdir: Path, port: int, log_name: str = "service.log"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.log = self.workdir / log_name
        self.proc = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_port(self.port, proc=self.proc)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"{self.log.stem} did not start: {e}\n{self.log.read_text()[-3000:]}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Mitmdump(Service):
    """`mitmdump -s <launcher> --mode reverse:UPSTREAM` (or another `mode`) on a free loopback port.

    `script=False` runs bare mitmdump (the baseline benchmarks compare against).
    """

    def __init__(self, upstream: str, workdir: Path, sets: dict | None = None, script: bool = True,
                 launcher: Path = LAUNCHER, mode: str | None = None, profile: Path | None = None):
        self.upstream = upstream
        workdir = Path(workdir)
        port = free_port()
        code = MITMDUMP
        if profile is not None:  # cProfile of the event loop's thread, written when mitmdump stops
            Path(profile).mkdir(parents=True, exist_ok=True)
            out = Path(profile) / f"mitmdump-{port}.prof"
            code = ("import cProfile; from mitmproxy.tools.main import mitmdump; "
                    f"cProfile.run('mitmdump()', {str(out)!r})")
        args = [sys.executable, "-c", code,
                "--mode", mode or f"reverse:{upstream}", "--listen-host", "127.0.0.1", "-p", str(port)]
        options = {"confdir": workdir / "mitmproxy", "flow_detail": 0}
        if script:
            args += ["-s", str(launcher)]
            options["store_path"] = workdir / "events.db"
            # as the bundle sets it once running; from the start, so the readiness probe's
            # connection does not make mitmproxy connect upstream (a one-connection upstream
            # would be used up by it)
            options["connection_strategy"] = "lazy"
        options.update(sets or {})
        self.store = Path(options.get("store_path", workdir / "events.db"))
        # each option once: mitmproxy silently drops a script option given twice
        for k, v in options.items():
            args += ["--set", f"{k}={v}"]
        super().__init__(args, workdir, port, "mitmdump.log")


def run_mitmdump(args: list[str], cwd: Path, timeout: float = 3600) -> str:
    """`mitmdump ARGS` to its end (reading or replaying flows, no proxy server);
    its log, or RuntimeError with the log's end if it failed."""
    done = subprocess.run([sys.executable, "-c", MITMDUMP, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"mitmdump exited with {done.returncode}:\n{log[-3000:]}")
    return log
