"""Helpers and fixtures for the render tests: real tools, tmp dirs, ports, processes.

A test that needs a tool which is missing is skipped with the reason, except under CI=true,
where it fails: CI must prove the rendered files against the real programs.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import REPO, unavailable

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NGINX = "/usr/sbin/nginx"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def missing(reason: str) -> None:
    unavailable(reason)


def need_tool(name: str) -> str:
    """Path of an executable (name on PATH or absolute path), else skip/fail."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if not path:
        missing(f"{name} is not installed")
    return path


def need_root() -> None:
    if os.geteuid() != 0:
        missing("this test needs root (to run services as their own users)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop one process we started, by its pid only."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def public_tmp():
    """A tmp dir other users can traverse (pytest's tmp_path is 0700 under root, which the
    nginx and postgres service users could not enter)."""
    d = tempfile.mkdtemp(prefix="ai-meeting-render-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx_user() -> str:
    """The rendered config says `user nginx;` (as in the nginx image): make sure it exists."""
    need_tool(NGINX)
    import pwd

    try:
        pwd.getpwnam("nginx")
    except KeyError:
        need_root()
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "nginx"],
                       check=True)
    return "nginx"


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[str, str]:
    """Throwaway self-signed certificate and key (read by the nginx master, which is root)."""
    openssl = need_tool("openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "fullchain.pem", d / "privkey.pem"
    subprocess.run([openssl, "req", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=ai-meeting.test",
                    "-addext", "subjectAltName=DNS:ai-meeting.test,DNS:www.ai-meeting.test,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def shell_check(script: str, tmp_path: Path, name: str) -> None:
    """bash -n and shellcheck -S style on a rendered script; assert both are clean."""
    shellcheck = need_tool("shellcheck")
    path = tmp_path / name
    path.write_text(script)
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, f"bash -n {name}:\n{r.stderr}"
    r = subprocess.run([shellcheck, "-S", "style", "-s", "bash", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, f"shellcheck {name}:\n{r.stdout}{r.stderr}"


def check_cron_file(text: str) -> list[str]:
    """An /etc/cron.d file: env lines or `m h dom mon dow user command`. Returns the jobs."""
    import re

    jobs = []
    field = re.compile(r"^[0-9A-Za-z*/,-]+$")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            continue
        parts = line.split(None, 6)
        assert len(parts) == 7, f"cron line needs 5 fields, user, command: {line!r}"
        assert all(field.match(p) for p in parts[:5]), f"bad schedule in {line!r}"
        assert re.match(r"^[a-z_][a-z0-9_-]*$", parts[5]), f"bad user in {line!r}"
        assert "%" not in parts[6], f"unescaped % in cron command {line!r}"
        jobs.append(line)
    assert text.endswith("\n"), "cron ignores a last line without newline"
    return jobs


class Cluster:
    def __init__(self, sockdir: str, port: int):
        self.sockdir, self.port = sockdir, port

    def psql(self, db: str, *args: str, sql: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "--no-password",
               "-h", self.sockdir, "-p", str(self.port), "-U", "postgres", "-d", db, *args]
        return subprocess.run(cmd, input=sql, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="session")
def cluster():
    """A real PostgreSQL 15 server on a unix socket in a tmp dir, preloading pg_stat_statements."""
    from render.postgres import render_postgres_args

    if not (PG_BIN / "initdb").exists():
        missing(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    need_root()
    need_tool("runuser")
    base = Path(tempfile.mkdtemp(prefix="ai-meeting-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(sock, "postgres", "postgres")
    subprocess.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", str(data)], check=True)
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    port = free_port()
    # The same server flags the postgres component uses (pg_stat_statements preloaded);
    # listen_addresses='' keeps it on its unix socket only.
    server_args = render_postgres_args()[1:]
    # Started as user postgres directly (not via runuser, which ignores SIGINT and would
    # leave the server behind), so the fast-shutdown signal reaches it.
    proc = subprocess.Popen([str(PG_BIN / "postgres"), "-D", str(data), "-k", str(sock), "-p", str(port),
                             "-c", "listen_addresses=", *server_args], user="postgres", group="postgres",
                            cwd=str(base), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = Cluster(str(sock), port)
    try:
        deadline = time.monotonic() + 60
        while c.psql("postgres", "-c", "select 1", check=False).returncode != 0:
            assert proc.poll() is None, "postgres exited at start"
            assert time.monotonic() < deadline, "postgres did not accept connections in 60 s"
            time.sleep(0.2)
        yield c
    finally:
        stop_process(proc, sig=signal.SIGINT, timeout=30)  # fast shutdown
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def images():
    """The monitoring images (Prometheus with promtool, the exporters, Alertmanager with amtool)."""
    from tests.support import REPO, require_engine

    require_engine()
    build = subprocess.run([str(REPO / "scripts" / "build-local-images"), "prometheus"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]


def run_in(image: str, entrypoint: str, workdir: Path, mount: str, *args: str) -> subprocess.CompletedProcess:
    """Run a tool of an image on the files of `workdir` (mounted read-only at `mount`)."""
    workdir.chmod(0o755)
    for f in workdir.iterdir():
        f.chmod(0o644)  # the images run as nobody
    return subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{workdir}:{mount}:ro", "-w", mount,
                           "--entrypoint", entrypoint, image, *args], capture_output=True, text=True, timeout=300)
