"""A Docker Swarm of several servers (target.kind swarm): every node bootstrapped as an ssh
target is, the swarm formed (init on the first manager, join on the others), node labels
set, the images copied to the nodes that run them, and the Docker provider pointed at the
first manager over ssh://.

Every step is a pulumi-command resource carrying the sha256 of its script in `triggers`:
an unchanged step never re-runs, and each script checks the node's swarm state first, so a
re-run after an interrupted `up` finishes the job instead of repeating it.
"""

from __future__ import annotations

import re
import shlex
import socket
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from config.model import DATA_LABEL, EDGE_LABEL, SwarmNode, SwarmTarget
from render.swarm import (
    render_join_tokens,
    render_node_labels,
    render_swarm_firewall,
    render_swarm_init,
    render_swarm_join,
)

from .bootstrap import Bootstrap, BootstrapArgs
from .images import local_image_id
from .target import sha256, ssh_connection, ssh_options

# Images each kind of node runs: API, web and monitoring go anywhere, the data services only
# on the data node, nginx only on edge nodes.
DATA = ("postgres", "redis", "minio")
EDGE = ("nginx",)


def node_key(node: SwarmNode) -> str:
    """A resource-name-safe, stable key per node (its SSH address, not its list position:
    removing one node must not rename the others' resources)."""
    raw = node.host if node.port == 22 else f"{node.host}-{node.port}"
    return re.sub(r"[^A-Za-z0-9.-]", "-", raw)


def images_for(node: SwarmNode, services: tuple[str, ...]) -> tuple[str, ...]:
    """Of the stack's images, those this node may run."""
    data, edge = node.labels.get(DATA_LABEL) == "true", node.labels.get(EDGE_LABEL) == "true"
    return tuple(s for s in services if (s not in DATA or data) and (s not in EDGE or edge))


def answering_manager(target: SwarmTarget, timeout: float = 3.0) -> SwarmNode:
    """The manager the swarm's API is reached through: the first in `target.nodes` whose sshd
    accepts a connection. With 3 managers, an `up` then works while one of them (nodes[0]
    included) is down, Raft keeping the swarm with the other two. A provider whose host
    changes is updated, nothing it manages is replaced. With one manager, or none answering,
    nodes[0]: the usual SSH error then says what is wrong."""
    managers = [n for n in target.nodes if n.role == "manager"]
    if len(managers) > 1:
        for node in managers:
            try:
                with socket.create_connection((node.host, node.port), timeout=timeout):
                    return node
            except OSError:
                continue
    return target.manager


@dataclass(frozen=True)
class SwarmClusterArgs:
    target: SwarmTarget
    bootstraps: tuple[BootstrapArgs, ...]  # one per node, in target.nodes' order
    images: dict[str, str]  # service -> image reference
    upload: bool  # images.upload: copy them from this machine's engine to each node


@dataclass
class SwarmNodeState:
    node: SwarmNode
    connection: command.remote.ConnectionArgs
    bootstrap: Bootstrap
    node_id: pulumi.Output[str]
    ready: list[pulumi.Resource]  # joined, labelled, images loaded


def _sudo_script(script: str) -> str:
    """The script on the command line of `sudo bash -c` (it holds no secret), so stdin stays
    free for a secret the script reads (a join token)."""
    return f"sudo -n bash -c {shlex.quote(script)}"


class SwarmCluster(pulumi.ComponentResource):
    nodes: list[SwarmNodeState]
    provider: docker.Provider

    def __init__(self, name: str, args: SwarmClusterArgs, stack: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:swarm:Cluster", name, None, opts)
        target = args.target
        child = pulumi.ResourceOptions(parent=self)
        manager = target.manager
        self.nodes = []
        tokens: pulumi.Output[list[str]] | None = None
        manager_conn: command.remote.ConnectionArgs | None = None
        label_steps: list[pulumi.Resource] = []
        for node, boot_args in zip(target.nodes, args.bootstraps):
            key = node_key(node)
            ssh_target = node.ssh_target(target.private_key)
            conn = ssh_connection(ssh_target)
            # The same bootstrap as an ssh target, node by node (its firewall, Docker, hardening).
            boot = Bootstrap(f"node-{key}", boot_args, conn, child, step_prefix=f"node-{key}-bootstrap")
            peers = [n.cluster_addr for n in target.nodes if n is not node]
            fw_script = render_swarm_firewall(peers)
            firewall = command.remote.Command(
                f"node-{key}-swarm-firewall",
                connection=conn,
                create="sudo -n bash -s",
                stdin=fw_script,
                triggers=[sha256(fw_script)],
                opts=pulumi.ResourceOptions(parent=self, depends_on=boot.steps[-1:]),
            )
            if node is manager:
                init_script = render_swarm_init(node.cluster_addr)
                joined = command.remote.Command(
                    f"node-{key}-swarm-init",
                    connection=conn,
                    create=_sudo_script(init_script),
                    triggers=[sha256(init_script)],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall]),
                )
                token_cmd = command.remote.Command(
                    "swarm-join-tokens",
                    connection=conn,
                    create=_sudo_script(render_join_tokens()),
                    triggers=[joined.stdout],
                    # The tokens admit a machine to the cluster: secret in state, never shown.
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[joined], additional_secret_outputs=["stdout"]),
                )
                tokens = token_cmd.stdout.apply(lambda out: out.split())
                manager_conn = conn
            else:
                assert tokens is not None  # the first node is the manager (validated)
                join_script = render_swarm_join(manager.cluster_addr, node.cluster_addr)
                token = tokens.apply(lambda t, role=node.role: t[1] if role == "manager" else t[0])
                joined = command.remote.Command(
                    f"node-{key}-swarm-join",
                    connection=conn,
                    create=_sudo_script(join_script),
                    stdin=pulumi.Output.secret(token.apply(lambda t: t + "\n")),
                    # Not the token: a rotated token must not make a member rejoin.
                    triggers=[sha256(join_script), node.role],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall]),
                )
            node_id = joined.stdout.apply(lambda out: out.strip().splitlines()[-1] if out.strip() else "")
            assert manager_conn is not None
            labels = dict(node.labels)
            labelled = command.remote.Command(
                f"node-{key}-labels",
                connection=manager_conn,
                create=node_id.apply(lambda nid, labels=labels: _sudo_script(render_node_labels(nid, labels))),
                triggers=[node_id, sha256(repr(sorted(labels.items())))],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[joined]),
            )
            label_steps.append(labelled)
            ready: list[pulumi.Resource] = [joined, labelled]
            if args.upload:
                ready.append(self._upload(key, node, target, args.images, stack, boot.steps[-1:]))
            self.nodes.append(SwarmNodeState(node, conn, boot, node_id, ready))
        # Resolves once every node is in the swarm, labelled and has its images: only then does
        # anything talk to the swarm's API (placement constraints need the labels).
        everything = [r for n in self.nodes for r in n.ready]
        ready_out = pulumi.Output.all(*[r.id for r in everything]).apply(lambda ids: sha256(",".join(ids)))
        reach = answering_manager(target)
        manager_target = reach.ssh_target(target.private_key)
        self.manager_node = reach
        self.provider = docker.Provider(
            "docker",
            host=ready_out.apply(lambda _: manager_target.docker_host),
            ssh_opts=ssh_options(manager_target, stack),
            opts=child,
        )
        self.register_outputs({"nodes": [node_key(n.node) for n in self.nodes]})

    def _upload(
        self, key: str, node: SwarmNode, target: SwarmTarget, images: dict[str, str], stack: str, after: list[pulumi.Resource]
    ) -> command.local.Command:
        """The images this node runs, copied from this machine's engine: only those whose id the
        node lacks, in one `docker save | ssh docker load` stream (shared layers go once).
        Re-runs when a local image changes; a release then sends the API image alone."""
        refs = [images[s] for s in images_for(node, tuple(images))]
        ssh = shlex.join(
            ["ssh", *ssh_options(node.ssh_target(target.private_key), stack), "-p", str(node.port), f"{node.user}@{node.host}"]
        )
        script = f"""set -euo pipefail
missing=()
for ref in {shlex.join(refs)}; do
  want=$(docker image inspect -f '{{{{.Id}}}}' "$ref")
  have=$({ssh} sudo -n docker image inspect -f "'{{{{.Id}}}}'" "$ref" 2>/dev/null || true)
  [ "$want" = "$have" ] || missing+=("$ref")
done
if [ ${{#missing[@]}} -gt 0 ]; then
  docker save "${{missing[@]}}" | {ssh} sudo -n docker load
else
  echo "node has every image already"
fi"""
        return command.local.Command(
            f"node-{key}-images",
            create=script,
            interpreter=["/bin/bash", "-c"],
            triggers=[*[local_image_id(r) for r in refs], *refs],
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )
