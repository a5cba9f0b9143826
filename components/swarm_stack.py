"""The AI Meeting stack on a Docker Swarm (target.kind swarm): cluster, then services."""

from __future__ import annotations

import pulumi

from config.model import DATA_LABEL, EDGE_LABEL, StackConfig, SwarmTarget

from .secrets import Secrets
from .stack import common_outputs
from .swarm import SwarmCluster, node_key
from .swarm_services import SwarmServices
from .target import HostShell
from .tls import Tls


class SwarmStack(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:stack:AiMeetingSwarm", name, None, opts)
        target = cfg.target
        assert isinstance(target, SwarmTarget)
        if cfg.tls.mode == "letsencrypt":  # the model refuses it already; kept as a guard
            raise pulumi.RunError("tls.mode letsencrypt is not supported on a swarm yet")
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()
        self.cluster = SwarmCluster("swarm", cfg, stack, child)
        self.secrets = Secrets("secrets", cfg, child)
        # Self-signed or provided material only: the shell is never used for those modes.
        self.tls = Tls("tls", cfg, HostShell(cfg, None, stack), [], child)
        data = next(n for n in self.cluster.nodes if n.node.labels.get(DATA_LABEL) == "true")
        edges = [(node_key(n.node), n.connection) for n in self.cluster.nodes if n.node.labels.get(EDGE_LABEL) == "true"]
        self.services = SwarmServices(
            "services", cfg, self.cluster.provider, self.secrets, self.tls.material,
            manager=self.cluster.manager_connection, data_node=data.connection, edge_nodes=edges, opts=child,
        )
        self.outputs = swarm_outputs(cfg, self)
        self.register_outputs(self.outputs)


def swarm_outputs(cfg: StackConfig, stack: SwarmStack) -> dict[str, object]:
    """The ssh stack's output names where they mean the same (README: Outputs), plus `swarm`."""
    target = cfg.target
    assert isinstance(target, SwarmTarget)
    prefix = cfg.name_prefix
    return {
        **common_outputs(cfg, stack.secrets, network=stack.services.network.name, api=[f"api:{cfg.api.port}"],
                         web=f"web:{cfg.web.port}", backups=False),
        "swarm": {
            "manager": target.docker_host,
            "nodes": [
                {"host": n.node.host, "port": n.node.port, "role": n.node.role, "labels": dict(n.node.labels),
                 "advertise_addr": n.node.cluster_addr, "node_id": n.node_id}
                for n in stack.cluster.nodes
            ],
            "services": {svc: f"{prefix}-{svc}" for svc in ("api", "web", "nginx", "postgres", "redis", "minio")},
            "data_node": next(n.host for n in target.nodes if n.labels.get(DATA_LABEL) == "true"),
            "edge_nodes": [n.cluster_addr for n in target.nodes if n.labels.get(EDGE_LABEL) == "true"],
        },
    }
