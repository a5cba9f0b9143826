"""Three bare Debian 12 servers on one Docker network, each with its own dockerd once the
program's bootstrap has installed it: the Docker Swarm the swarm tier deploys onto.

`scripts/prod-test-server start-server` starts each one (the same harness as tests/prod, with
this tier's own names, addresses and ports), and `start-pebble` this tier's own pebble, whose
DNS sends every name to the data node: the other edge node's HTTP-01 challenges reach it.
They are started fresh once per session and removed, with their volumes and network, at the
end. A missing prerequisite skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.prerequisites import unavailable
from tests.support.pebble import Pebble, parse_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prod-test-server"
HARNESS_CACHE = os.environ.get("AI_MEETING_CACHE", str(Path.home() / ".cache" / "ai-meeting"))
NETWORK = "aim-swarm-net"
NET_PREFIX = "172.30.240"
EDGE_HTTP_PORT, EDGE_HTTPS_PORT = 8091, 8491
# Three managers: nodes[0] runs only what the scheduler puts there, so it can be lost while the
# site keeps serving; the data services live on node 2, nginx on nodes 2 and 3 (the load tests
# go through node 3's published ports; pebble validates every name on node 2).
DATA_NODE, EDGE_NODE = 2, 3
EDGE_NODES = (2, 3)
RUN_DIR = Path(HARNESS_CACHE) / "prod-server" / "run-aim-swarm"
DOMAIN = "meet.test"
# Where the edge nodes find pebble's CA (test setup, as tests/prod does: a real CA needs none).
CA_ON_NODES = "/usr/local/share/ai-meeting-test/pebble-ca.pem"

TIMINGS: dict[str, float] = {}
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS or FIGURES:
        terminalreporter.section("swarm tier figures")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.0f}s  {what}")
        for line in FIGURES:
            terminalreporter.write_line(line)


@dataclass
class Node:
    index: int  # 1..3
    name: str  # the outer container, e.g. aim-swarm-1
    ip: str  # its address on aim-swarm-net (what the other nodes reach)
    ssh_port: int
    key_path: Path
    user: str = "deploy"
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def harness_env(self) -> dict[str, str]:
        edge = self.index == EDGE_NODE
        return {
            **os.environ,
            "AI_MEETING_CACHE": HARNESS_CACHE,
            "PROD_TEST_SERVER_NAME": self.name,
            "PROD_TEST_HOSTNAME": self.name,
            "PROD_TEST_NETWORK": NETWORK,
            "PROD_TEST_NET_PREFIX": NET_PREFIX,
            "PROD_TEST_SERVER_IP": self.ip,
            "PROD_TEST_SSH_PORT": str(self.ssh_port),
            "PROD_TEST_HTTP_PORT": str(EDGE_HTTP_PORT) if edge else "none",
            "PROD_TEST_HTTPS_PORT": str(EDGE_HTTPS_PORT) if edge else "none",
            "PROD_TEST_RUN_DIR": str(RUN_DIR),
            # This tier's pebble, apart from the prod tier's (its TLS certificate names this
            # network's gateway).
            "PROD_TEST_PEBBLE_DIR": str(RUN_DIR / "pebble-tls"),
            "PROD_TEST_PEBBLE_PORT": "14100", "PROD_TEST_PEBBLE_MGMT_PORT": "15100",
            "PROD_TEST_DNS_PORT": "8153", "PROD_TEST_CHALLTESTSRV_MGMT_PORT": "8155",
            "PROD_TEST_DOMAIN": DOMAIN,
        }

    def harness(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=self.harness_env())
        if proc.returncode != 0:
            pytest.fail(f"scripts/prod-test-server {' '.join(args)} ({self.name}) exited {proc.returncode}\n"
                        f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
        return proc

    def sh(self, command: str, *, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        """A root shell on the node (docker exec into the outer container: works while its
        sshd or firewall is being changed by the program)."""
        proc = subprocess.run(["docker", "exec", self.name, "sh", "-c", command], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"on {self.name}: `{command}` exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def config(self, role: str, labels: dict[str, str]) -> dict[str, object]:
        return {"host": "127.0.0.1", "port": self.ssh_port, "user": self.user, "role": role,
                "advertise_addr": self.ip, "labels": labels}


@dataclass
class Swarm:
    nodes: list[Node]
    pebble: Pebble

    @property
    def private_key(self) -> str:
        return self.nodes[0].key_path.read_text()

    @property
    def manager(self) -> Node:
        """The first node whose server runs (all three are managers)."""
        for node in self.nodes:
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", node.name], capture_output=True, text=True)
            if state.stdout.strip() == "true":
                return node
        raise AssertionError("no swarm test server is running")

    @property
    def data_node(self) -> Node:
        return self.nodes[DATA_NODE - 1]

    @property
    def edge_node(self) -> Node:
        return self.nodes[EDGE_NODE - 1]

    @property
    def edge_nodes(self) -> list[Node]:
        return [self.nodes[i - 1] for i in EDGE_NODES]

    def start_server(self, index: int) -> Node:
        """A further bare server on the swarm's network (the runbooks' new machine)."""
        node = make_node(index)
        node.harness("start-server", timeout=1800)
        return node

    def docker(self, args: str, *, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        """The swarm's docker CLI, on a running manager."""
        return self.manager.sh(f"docker {args}", check=check, timeout=timeout)


def _check_prerequisites() -> None:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        unavailable("no Docker engine answers (run scripts/start-dockerd)")
    if os.geteuid() != 0:
        unavailable("the swarm test servers need root (debootstrap, privileged containers)")
    if shutil.which("debootstrap") is None and not list((Path(HARNESS_CACHE) / "prod-server").glob("debian-*.tar.gz")):
        unavailable("debootstrap is not installed and no cached server rootfs exists")
    probe = subprocess.run(["ip", "link", "add", "aimswarmvx0", "type", "vxlan", "id", "4242", "dstport", "4789"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"this kernel cannot create a vxlan device (overlay networks need it): {probe.stderr.strip()}")
    subprocess.run(["ip", "link", "del", "aimswarmvx0"], capture_output=True)


# Servers the node runbooks add later (added, then replaced by the next): cleaned up with the rest.
EXTRA_NODES = (4, 5)


def make_node(index: int) -> Node:
    key = Path(HARNESS_CACHE) / "prod-server" / "keys" / "id_ed25519"
    return Node(index, f"aim-swarm-{index}", f"{NET_PREFIX}.{10 + index}", 2240 + index, key)


def make_nodes() -> list[Node]:
    return [make_node(i) for i in (1, 2, 3)]


def remove_all(nodes: list[Node]) -> None:
    for node in nodes:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, timeout=300, env=node.harness_env())
    subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True)


@pytest.fixture(scope="session")
def swarm_servers() -> Swarm:
    """Three fresh bare servers (earlier ones removed first); removed again at the end."""
    _check_prerequisites()
    nodes = make_nodes()
    # AI_MEETING_REUSE_SWARM=1 (by hand, with AI_MEETING_KEEP_SWARM=1 before): keep running
    # servers and remove only the stack's services, for a quicker edit-and-run loop.
    reuse = os.environ.get("AI_MEETING_REUSE_SWARM") == "1"
    extra = [make_node(i) for i in EXTRA_NODES]
    if not reuse:
        remove_all(nodes + extra)
    try:
        for node in nodes:
            node.harness("start-server", timeout=1800)
        # Pebble's DNS answers every name with the data node's address (node 2, an edge node).
        pebble = Pebble.from_harness_env(parse_env(nodes[DATA_NODE - 1].harness("start-pebble").stdout))
        pebble.check_directory()
        for node in nodes:
            if node.index in EDGE_NODES:
                node.sh(f"install -d /usr/local/share/ai-meeting-test && cat > {CA_ON_NODES} <<'EOF'\n"
                        f"{pebble.ca_bundle.read_text().strip()}\nEOF")
        if reuse:
            nodes[0].sh("docker service ls -q | xargs -r docker service rm; sleep 5; "
                        "docker secret ls -q | xargs -r docker secret rm; docker config ls -q | xargs -r docker config rm; "
                        "docker network rm aim-swarm-network; sleep 5; "
                        "docker volume ls -q -f name=aim-swarm- | xargs -r docker volume rm", check=False)
        yield Swarm(nodes, pebble)
    finally:
        if os.environ.get("AI_MEETING_KEEP_SWARM") != "1":
            remove_all(nodes + extra)


def quote(s: str) -> str:
    return shlex.quote(s)
