"""The AI Meeting stack on a Docker Swarm (target.kind swarm): cluster, then services.

With components/stack.py and components/assembly.py, the only reader of `StackConfig`: the
service definitions come from the same assembly functions as on one server.
"""

from __future__ import annotations

import dataclasses

import pulumi

from config.model import DATA_LABEL, EDGE_LABEL, StackConfig, SwarmTarget
from render.nginx import render_nginx_conf

from . import assembly
from .catalogue import NginxArgs
from .images import local_image_id
from .releases import release_history
from .secrets import Secrets
from .stack import common_outputs, offsite_outputs
from .swarm import SwarmCluster, SwarmClusterArgs, node_key
from .swarm_services import SwarmServices, SwarmServicesArgs
from .target import HostShell
from .tls import EdgeCertificates, Tls

# Where each edge nginx answers the other edge nodes' ACME challenges (overlay only).
ACME_PEER_PORT = 8089


class SwarmStack(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:stack:AiMeetingSwarm", name, None, opts)
        target = cfg.target
        assert isinstance(target, SwarmTarget)
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()
        refs = assembly.image_refs(cfg)
        self.cluster = SwarmCluster(
            "swarm",
            SwarmClusterArgs(target=target, bootstraps=tuple(assembly.node_bootstrap_args(cfg, n) for n in target.nodes),
                             images=refs, upload=cfg.images.upload),
            stack, child,
        )
        self.secrets = Secrets("secrets", cfg.rotation, cfg.protect, child)

        def shell(state) -> HostShell:
            return HostShell(state.node.ssh_target(target.private_key), state.connection, stack)

        data = next(n for n in self.cluster.nodes if n.node.labels.get(DATA_LABEL) == "true")
        edges = [(node_key(n.node), shell(n)) for n in self.cluster.nodes if n.node.labels.get(EDGE_LABEL) == "true"]
        # Migrations run through the manager the swarm's API is reached through (swarm.py).
        manager = shell(next(n for n in self.cluster.nodes if n.node is self.cluster.manager_node))
        letsencrypt = cfg.tls.mode == "letsencrypt"
        issue_certificates = None
        if letsencrypt:
            # Every edge node its own certificate, any edge node answering the challenge.
            edge_certs = EdgeCertificates(
                "tls", assembly.edge_certificates_args(cfg), edges,
                [n.bootstrap.steps[-1] for n in self.cluster.nodes if n.node.labels.get(EDGE_LABEL) == "true"], child)
            material, issue_certificates = edge_certs.material, edge_certs.issue
        else:
            material = Tls("tls", assembly.tls_args(cfg), manager, [], child).material
        conf = render_nginx_conf(dataclasses.replace(
            assembly.nginx_site(cfg, [f"api:{cfg.api.port}"], f"web:{cfg.web.port}", material.acme_webroot),
            # Service names re-resolved through Docker's DNS at request time (dnsrr); a task on a
            # node that just died never answers, so the next address is tried after 2 s.
            dns_resolver="127.0.0.11", api_connect_timeout="2s", ws_connect_timeout="2s",
            acme_peers=f"nginx:{ACME_PEER_PORT}" if letsencrypt else None,
        ))
        s = self.secrets
        self.services = SwarmServices(
            "services",
            SwarmServicesArgs(
                name_prefix=cfg.name_prefix,
                node_count=len(target.nodes),
                postgres=assembly.postgres_args(cfg, refs["postgres"], s),
                redis=assembly.redis_args(cfg, refs["redis"], s),
                minio=assembly.minio_args(cfg, refs["minio"], s),
                api=assembly.api_args(cfg, refs["api"], s),
                web=assembly.web_args(cfg, refs["web"], replicas=min(2, len(target.nodes))),
                nginx=NginxArgs(
                    image=refs["nginx"], limits=cfg.resources.nginx, timezone=cfg.timezone, conf=conf,
                    http_port=cfg.nginx.http_port, https_port=cfg.nginx.https_port,
                    certificate_pem=material.certificate_pem, private_key_pem=material.private_key_pem,
                    cert_dir=material.host_dir, acme_webroot=material.acme_webroot,
                    log_dir=f"{cfg.install_dir}/logs/nginx", hardening=cfg.hardening.nginx,
                ),
                monitoring=assembly.monitoring_args(cfg, refs, stack) if cfg.monitoring.enabled else None,
                db_password_rotation=cfg.rotation.db_password,
                canonical_domain=cfg.canonical_domain,
                backup=assembly.backup_settings(cfg) if assembly.backups_enabled(cfg) else None,
                offsite=assembly.offsite_credentials(cfg),
                protect_data=cfg.protect,
            ),
            self.cluster.provider,
            manager=manager, data_node=shell(data), edge_nodes=edges, tls_ready=material.ready,
            issue_certificates=issue_certificates,
            opts=child,
        )
        # The ids of the images this machine uploads; without upload the nodes pull the refs.
        ids = {k: local_image_id(refs[k]) if cfg.images.upload else None for k in ("api", "web")}
        self.releases = release_history(refs["api"], refs["web"], ids["api"], ids["web"], self)
        self.outputs = swarm_outputs(cfg, self)
        self.register_outputs(self.outputs)


def swarm_outputs(cfg: StackConfig, stack: SwarmStack) -> dict[str, object]:
    """The ssh stack's output names where they mean the same (README: Outputs), plus `swarm`."""
    target = cfg.target
    assert isinstance(target, SwarmTarget)
    prefix = cfg.name_prefix
    return {
        **common_outputs(cfg, stack.secrets, network=stack.services.network.name, api=[f"api:{cfg.api.port}"],
                         web=f"web:{cfg.web.port}", backups=stack.services.backups is not None),
        "releases": stack.releases,
        **offsite_outputs(cfg, stack.services.backups),
        "swarm": {
            "manager": target.docker_host,
            "nodes": [
                {"host": n.node.host, "port": n.node.port, "role": n.node.role, "labels": dict(n.node.labels),
                 "advertise_addr": n.node.cluster_addr, "node_id": n.node_id}
                for n in stack.cluster.nodes
            ],
            "services": {svc: f"{prefix}-{svc}" for svc in ("api", "web", "nginx", "postgres", "redis", "minio",
                                                             *(("prometheus", "node-exporter", "blackbox-exporter")
                                                               if cfg.monitoring.enabled else ()))},
            "data_node": next(n.host for n in target.nodes if n.labels.get(DATA_LABEL) == "true"),
            "edge_nodes": [n.cluster_addr for n in target.nodes if n.labels.get(EDGE_LABEL) == "true"],
        },
    }
