"""A throwaway PostgreSQL server on a Unix socket, for the tests and benchmarks of the shared store.

It runs Debian's ``postgresql`` package (``initdb`` and ``postgres`` from ``/usr/lib/postgresql/*/bin``
or the ``PATH``): a new cluster in a temporary folder, trust authentication, no TCP port, removed on
`stop`. As root (CI, containers) the server runs as the ``postgres`` user, which PostgreSQL requires.
`find_bindir` returns None where the package is not installed: the callers skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["PostgresServer", "find_bindir"]


def find_bindir() -> Path | None:
    """The folder of ``initdb`` and ``postgres`` (the newest installed version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and (Path(initdb).resolve().parent / "postgres").exists() else None


class PostgresServer:
    """Start with `start` (or as a context manager); `create_database` gives a new database's URL.

    ``durable=False`` turns off fsync (tests: the server itself is never killed); the benchmark keeps
    PostgreSQL's defaults, as SQLite keeps ``synchronous=FULL``.
    """

    def __init__(self, *, durable: bool = True, bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="ballistix-pg-"))
        self.data, self.socket = self.root / "data", self.root / "socket"
        self.proc: subprocess.Popen | None = None
        self._as = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        self.socket.mkdir(parents=True)
        if self._as:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        settings = ["-c", "listen_addresses=", "-k", str(self.socket), "-c", "max_connections=60"]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.proc = subprocess.Popen(
            [*self._as, str(self.bindir / "postgres"), "-D", str(self.data), *settings],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "wb"),  # noqa: SIM115 (the server's, closed with it)
        )
        deadline = time.monotonic() + 60
        while not (self.socket / ".s.PGSQL.5432").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start: {log}")
            time.sleep(0.05)
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import psycopg

        while True:
            try:
                psycopg.connect(self.url("postgres"), autocommit=True).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = name or f"store_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError):  # immediate: the cluster is removed next
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
