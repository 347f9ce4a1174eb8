"""A coordinator and one worker on loopback, for the benchmarks that run
sweeps through the real service (orchestration_overhead.py,
adaptive_vs_grid.py).

    with Service(build, slots=2) as service:
        wall = service.submit_and_wait(spec_path)
        rows = service.query("SELECT ...")
"""
import os
import socket
import sqlite3
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, build, slots, worker_flags=(), work=None):
        self.build = build
        self.work = work or tempfile.mkdtemp(prefix="megabatch-bench-")
        os.makedirs(self.work, exist_ok=True)
        self.db = os.path.join(self.work, "megabatch.db")
        self.address = "127.0.0.1:%d" % free_port()
        self.slots = slots
        self.worker_flags = list(worker_flags)
        self.procs = []

    def __enter__(self):
        log = open(os.path.join(self.work, "processes.log"), "w")
        self.procs = [
            subprocess.Popen([os.path.join(self.build, "server/megabatch-coordinator"),
                              "--listen", self.address, "--db", self.db, "--metrics-listen", ""],
                             stdout=log, stderr=log),
            subprocess.Popen([os.path.join(self.build, "worker/daemon/megabatch-worker"),
                              "--coordinator", self.address, "--slots", str(self.slots),
                              "--threads-per-slot", "1", "--host-claims", "",
                              "--work-dir", os.path.join(self.work, "worker")]
                             + self.worker_flags, stdout=log, stderr=log)]
        # Ready once the worker is registered and idle.
        deadline = time.monotonic() + 60
        while "alive" not in self.cli("workers", check=False):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not register; see " + log.name)
            time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()

    def cli(self, *args, check=True):
        r = subprocess.run([os.path.join(self.build, "cli/megabatch"), "--server", self.address]
                           + list(args), capture_output=True, text=True)
        if check and r.returncode != 0:
            raise SystemExit("megabatch %s failed: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def submit_and_wait(self, spec_path):
        """Seconds from submit to the sweep's end."""
        start = time.monotonic()
        self.cli("submit", spec_path, "--wait")
        return time.monotonic() - start

    def query(self, sql, args=()):
        con = sqlite3.connect(self.db)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
