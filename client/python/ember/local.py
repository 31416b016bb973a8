"""ember.local: shard servers on loopback, for tests, demos and notebooks.

    with ember.local.LocalShards(2) as shards:
        client = ember.Client(shards.addresses)

starts `ember-server --listen 127.0.0.1:0 --shard-index i --shard-count n` per
shard (the kernel picks free ports; each address is read from the server's
"event=listening addr=..." log line, as deploy/quickstart.sh does) and stops
them (SIGTERM, then SIGKILL) on exit. Not for production: a real cluster runs
its servers under its own supervisor.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time

from . import _lib

_LISTENING = re.compile(r"event=listening addr=(\S+)")


def find_server():
    """The ember-server binary: $EMBER_SERVER_BIN; else the newest build tree of
    this checkout (build*/server/ember-server, sanitizer builds skipped); else
    ember-server on PATH. Raises FileNotFoundError."""
    env = os.environ.get("EMBER_SERVER_BIN")
    if env:
        return env
    built = _lib.built("build*/server/ember-server")
    if built:
        return built[0]
    found = shutil.which("ember-server")
    if found:
        return found
    raise FileNotFoundError("ember-server not found: build it or set EMBER_SERVER_BIN")


class LocalShards:
    """n ember-server processes on 127.0.0.1. addresses: their "host:port" in
    shard order; shards: the same joined by commas (an EMBER_SHARDS value).
    backend: "cpu" (default), "gpu" or "auto". workdir: where logs and each
    shard's checkpoint directory (ckpt<i>) go; a temporary directory, removed on
    stop, when None."""

    def __init__(self, n=2, *, server=None, backend="cpu", threads=2, workdir=None,
                 extra_args=(), start_timeout=20.0):
        self.n = n
        self.server = server or find_server()
        self.backend = backend
        self.threads = threads
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self._own_dir = workdir is None
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="ember-local-"))
        self.procs = []
        self.addresses = []

    @property
    def shards(self):
        return ",".join(self.addresses)

    def start(self):
        try:
            for i in range(self.n):
                self._start_one(i)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_one(self, i, listen="127.0.0.1:0"):
        log = self.workdir / f"server{i}.log"
        ckpt = self.workdir / f"ckpt{i}"
        ckpt.mkdir(parents=True, exist_ok=True)
        args = [self.server, "--listen", listen, "--shard-index", str(i),
                "--shard-count", str(self.n), "--threads", str(self.threads),
                "--checkpoint-dir", str(ckpt)]
        if self.backend:
            args += ["--backend", self.backend]
        args += self.extra_args
        restart = i < len(self.procs)
        start_at = log.stat().st_size if restart else 0  # a restart appends to the log
        with open(log, "ab" if restart else "wb") as f:
            p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        if restart:
            self.procs[i] = p
        else:
            self.procs.append(p)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with open(log, "rb") as f:
                f.seek(start_at)
                m = _LISTENING.search(f.read().decode(errors="replace"))
            if m:
                if not restart:
                    self.addresses.append(m.group(1))
                return
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"ember-server {i} did not start:\n" + log.read_text(errors="replace"))

    def kill(self, i, sig=signal.SIGKILL):
        """Sends `sig` to shard i: SIGKILL (the default) crashes it, as an OOM
        kill or a lost node would, and waits for the exit; SIGSTOP/SIGCONT
        freeze and thaw it (it keeps its connections but answers nothing)."""
        p = self.procs[i]
        p.send_signal(sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            p.wait(timeout=30)

    def restart(self, i):
        """Starts shard i again, after kill(), on its address and its checkpoint
        directory, which it restores its tables from (a pod's restart). Returns
        when it listens."""
        if self.procs[i].poll() is None:
            raise RuntimeError(f"shard {i} is still running")
        for attempt in range(50):  # the port may linger for a moment after a kill
            try:
                return self._start_one(i, listen=self.addresses[i])
            except RuntimeError:
                if attempt == 49:
                    raise
                time.sleep(0.1)

    def log(self, i):
        """Shard i's log so far (its restarts appended)."""
        return (self.workdir / f"server{i}.log").read_text(errors="replace")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
