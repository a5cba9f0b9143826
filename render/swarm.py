"""Docker Swarm formation scripts (target.kind swarm), as pure functions.

Each script is idempotent: it reads the node's swarm state (`docker info`) first and only
acts when something is missing, so a re-run (or an interrupted `up` finished by the next
one) never re-initialises a swarm or joins a node twice.
"""
from __future__ import annotations

import re
import shlex

from ._templating import check_hostname

# Swarm's own ports (Docker docs: "Use overlay networks"): cluster management, node
# gossip, and the VXLAN data plane of overlay networks.
SWARM_PORTS = (("2377", "tcp"), ("7946", "tcp"), ("7946", "udp"), ("4789", "udp"))
_ADDR = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]*=[A-Za-z0-9._-]+$")

_STATE = "docker info --format '{{.Swarm.LocalNodeState}}'"


def _check_addr(addr: str, what: str) -> str:
    if not isinstance(addr, str) or not (_ADDR.match(addr) or check_hostname(addr, what)):
        raise ValueError(f"{what}: {addr!r} is not an address")
    return addr


def render_swarm_firewall(peers: list[str]) -> str:
    """ufw rules letting the other nodes (and only them) reach this node's swarm ports: the
    bootstrap's firewall denies every other incoming port."""
    lines = ["set -euo pipefail"]
    for peer in sorted(set(peers)):
        _check_addr(peer, "peer")
        for port, proto in SWARM_PORTS:
            lines.append(f"ufw allow from {peer} to any port {port} proto {proto} >/dev/null")
    lines.append("echo swarm ports open to: " + shlex.quote(" ".join(sorted(set(peers))) or "nobody"))
    return "\n".join(lines)


def render_swarm_init(advertise_addr: str) -> str:
    """On the first manager: `docker swarm init` unless this node is already in a swarm."""
    _check_addr(advertise_addr, "advertise_addr")
    addr = shlex.quote(advertise_addr)
    return f"""set -euo pipefail
state=$({_STATE})
if [ "$state" = active ]; then
  echo "already in a swarm (manager: $(docker info --format '{{{{.Swarm.ControlAvailable}}}}'))" >&2
else
  docker swarm init --advertise-addr {addr} --listen-addr {addr}:2377 >/dev/null
  echo "swarm initialised on {advertise_addr}" >&2
fi
docker info --format '{{{{.Swarm.NodeID}}}}'"""


def render_join_tokens() -> str:
    """On the first manager: the two join tokens, one per line (worker, manager)."""
    return "set -euo pipefail\ndocker swarm join-token -q worker\ndocker swarm join-token -q manager"


def render_swarm_join(manager_addr: str, advertise_addr: str) -> str:
    """On every other node: join through the first manager unless already in a swarm. The
    token arrives on the first line of stdin, so it is in no Pulumi command line or log (the
    docker CLI itself takes it only as an argument, for the second the join lasts)."""
    _check_addr(manager_addr, "manager_addr")
    _check_addr(advertise_addr, "advertise_addr")
    return f"""set -euo pipefail
read -r token
state=$({_STATE})
if [ "$state" = active ]; then
  echo "already in a swarm" >&2
else
  docker swarm join --token "$token" --advertise-addr {shlex.quote(advertise_addr)} \\
    {shlex.quote(manager_addr)}:2377 >/dev/null
  echo "joined the swarm of {manager_addr}" >&2
fi
docker info --format '{{{{.Swarm.NodeID}}}}'"""


def render_node_labels(node_id: str, labels: dict[str, str]) -> str:
    """On a manager: set the node's labels (the program's placement constraints read them)."""
    if not re.fullmatch(r"[a-z0-9]{10,40}", node_id or ""):
        raise ValueError(f"node_id: {node_id!r} is not a swarm node id")
    pairs = [f"{k}={v}" for k, v in sorted(labels.items())]
    for p in pairs:
        if not _LABEL.match(p):
            raise ValueError(f"label {p!r} is not key=value")
    adds = " ".join(f"--label-add {shlex.quote(p)}" for p in pairs)
    if not adds:
        return f"set -euo pipefail\ndocker node inspect {node_id} >/dev/null"
    return f"set -euo pipefail\ndocker node update {adds} {node_id} >/dev/null\necho labelled {node_id}: {shlex.quote(' '.join(pairs))}"
