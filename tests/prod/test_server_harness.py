"""The prod test harness itself: the server is bare Debian 12 that a bootstrap can work on,
it can run Docker once docker.io is installed, and certbot on it gets certificates from pebble.

The tests run in file order on one server (each builds on the one before).
"""

from __future__ import annotations

import shlex
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.prerequisites import unavailable
from tests.prod.conftest import Pebble, ProdServer

pytestmark = [pytest.mark.prod, pytest.mark.docker, pytest.mark.timeout(900)]

CA_ON_SERVER = "/usr/local/share/ca-certificates/prod-test-pebble.crt"


def test_ssh_as_deploy_and_sudo(bare_server: ProdServer) -> None:
    assert bare_server.ssh("id -un").stdout.strip() == "deploy"
    assert bare_server.ssh("sudo -n id -u").stdout.strip() == "0"
    # Key login only: the accounts have no usable password.
    shadow = bare_server.sudo("getent shadow root deploy").stdout
    for line in shadow.splitlines():
        name, pw = line.split(":")[:2]
        assert pw.startswith(("!", "*")), f"{name} has a usable password"


def test_a_wrong_key_is_refused(bare_server: ProdServer, tmp_path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    res = bare_server.ssh("true", check=False, key_path=key)
    assert res.code == 255 and "Permission denied" in res.stderr, res


def test_systemd_is_pid_1_and_running(bare_server: ProdServer) -> None:
    assert bare_server.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    state = bare_server.ssh("systemctl is-system-running", check=False).stdout.strip()
    failed = bare_server.ssh("systemctl --failed --no-legend --plain").stdout
    assert state == "running", f"systemd is {state}; failed units:\n{failed}"
    assert bare_server.ssh("systemctl is-active ssh").stdout.strip() == "active"


def test_server_is_bare_debian_12(bare_server: ProdServer) -> None:
    os_release = bare_server.ssh("cat /etc/os-release").stdout
    assert 'VERSION_ID="12"' in os_release and "ID=debian" in os_release
    # Nothing the bootstrap is supposed to install or configure is there yet.
    for tool in ("docker", "curl", "ufw", "fail2ban-client", "certbot"):
        assert bare_server.ssh(f"command -v {tool}", check=False).code != 0, f"{tool} is preinstalled"
    # Debian's default, for the bootstrap's hardening to change.
    assert "permitrootlogin without-password" in bare_server.sudo("sshd -T").stdout


def test_apt_works(bare_server: ProdServer) -> None:
    bare_server.sudo("apt-get update -q", timeout=300)
    policy = bare_server.ssh("apt-cache policy docker.io").stdout
    assert "Candidate: (none)" not in policy and "Candidate:" in policy, policy


def test_docker_io_installs_and_runs_a_container(bare_server: ProdServer) -> None:
    started = time.monotonic()
    bare_server.sudo(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io", timeout=900
    )
    install_s = time.monotonic() - started
    info = bare_server.sudo("docker info --format '{{.Driver}} {{.CgroupDriver}}'").stdout.split()
    assert info[0] in ("overlay2", "vfs"), info
    # No registry anywhere: images come from this machine with `docker save | docker load`.
    image = _any_local_image()
    bare_server.load_images(image)
    out = bare_server.sudo(f"docker run --rm {image} cat /etc/os-release").stdout
    assert "ID=debian" in out
    print(f"docker.io install took {install_s:.0f}s")


def test_inner_published_port_is_reachable_from_this_machine(bare_server: ProdServer) -> None:
    nginx = "ai-meeting-local/nginx:1.22"
    if subprocess.run(["docker", "image", "inspect", nginx], capture_output=True).returncode:
        unavailable(f"{nginx} not built (scripts/build-local-images nginx)")
    bare_server.load_images(nginx)
    bare_server.sudo(f"docker run -d --name harness-probe -p 80:80 {nginx}")
    try:
        body = _get(f"http://127.0.0.1:{bare_server.http_port}/", attempts=30)
        assert body, "empty answer through 127.0.0.1:http_port -> server:80 -> container"
    finally:
        bare_server.sudo("docker rm -f harness-probe", check=False)


def test_certbot_gets_a_certificate_from_pebble(bare_server: ProdServer, pebble: Pebble) -> None:
    bare_server.sudo(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends certbot",
        timeout=600,
    )
    bare_server.put(CA_ON_SERVER, pebble.ca_bundle.read_text())
    # Pebble's directory, seen from the server (through the Docker network gateway).
    bare_server.ssh(f"python3 -c {shlex.quote(_PY_FETCH)} {pebble.directory_url} {CA_ON_SERVER}")
    domain = bare_server.domain
    bare_server.sudo(
        f"REQUESTS_CA_BUNDLE={CA_ON_SERVER} certbot certonly --standalone --non-interactive "
        f"--agree-tos -m ops@{domain} --server {pebble.directory_url} -d {domain}",
        timeout=300,
    )
    leaf = bare_server.sudo(f"cat /etc/letsencrypt/live/{domain}/cert.pem").stdout
    chain = bare_server.sudo(f"cat /etc/letsencrypt/live/{domain}/chain.pem").stdout
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-issuer", "-ext", "subjectAltName"],
        input=leaf, capture_output=True, text=True, check=True,
    ).stdout
    assert f"DNS:{domain}" in subject and "Pebble Intermediate CA" in subject, subject
    # The chain verifies against the root of this pebble run.
    verify = _openssl_verify(pebble.issuer_root_pem(), chain, leaf)
    assert verify.endswith("OK"), verify


_PY_FETCH = (
    "import ssl,sys,urllib.request;"
    "ctx=ssl.create_default_context(cafile=sys.argv[2]);"
    "print(urllib.request.urlopen(sys.argv[1],context=ctx,timeout=10).status)"
)


def _openssl_verify(root: str, chain: str, leaf: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "root.pem").write_text(root)
        Path(d, "chain.pem").write_text(chain)
        Path(d, "leaf.pem").write_text(leaf)
        proc = subprocess.run(
            ["openssl", "verify", "-CAfile", f"{d}/root.pem", "-untrusted", f"{d}/chain.pem", f"{d}/leaf.pem"],
            capture_output=True, text=True,
        )
        return (proc.stdout + proc.stderr).strip()


def _any_local_image() -> str:
    for image in ("ai-meeting-local/base:bookworm",):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
            return image
    # The server's own image is always there: a Debian 12 userland is enough for `docker run`.
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "ai-meeting-test/prod-server"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return out[0]


def _get(url: str, attempts: int = 10) -> str:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5, context=ssl.create_default_context()) as r:
                return r.read().decode(errors="replace")
        except Exception as exc:  # noqa: BLE001 - retried, then reported
            last = exc
            time.sleep(1)
    raise AssertionError(f"{url}: {last}")
