"""Server bootstrap over SSH (R1, R2, R3, R18), prod only.

One remote command per step, each carrying the sha256 of its script in `triggers`, so a
changed step re-runs alone and an unchanged one never re-runs (pulumi-command #37). Steps
run in order; scripts are idempotent, so an interrupted `up` is finished by the next one.
"""

from __future__ import annotations

import pulumi
import pulumi_command as command

from config.model import SshTarget, StackConfig
from render.bootstrap import BootstrapSettings, BootstrapStep, render_bootstrap_steps

from .target import sha256


def bootstrap_settings(cfg: StackConfig, swarm_node: bool = False) -> BootstrapSettings:
    assert isinstance(cfg.target, SshTarget)
    b = cfg.bootstrap
    ssh_port = b.ssh_port or cfg.target.port
    dockerd = b.docker
    return BootstrapSettings(
        deploy_user=cfg.target.user,
        timezone=cfg.timezone,
        ssh_port=ssh_port,
        allowed_tcp_ports=tuple(sorted({ssh_port, *b.allowed_tcp_ports})),
        install_dir=cfg.install_dir,
        min_cpus=b.min_cpus,
        min_memory_gb=b.min_memory_gb,
        min_disk_gb=b.min_disk_gb,
        preflight_mode=b.preflight_mode,
        letsencrypt=cfg.tls.mode == "letsencrypt",
        app_log_uid=cfg.api.log_uid,
        # Unset: live-restore on a single server, off on swarm nodes (swarm mode refuses it;
        # the config model rejects true for a swarm); userland-proxy the other way round.
        docker_live_restore=(not swarm_node) if dockerd.live_restore is None else dockerd.live_restore,
        docker_no_new_privileges=dockerd.no_new_privileges,
        docker_userland_proxy=swarm_node if dockerd.userland_proxy is None else dockerd.userland_proxy,
        docker_log_max_size=dockerd.log_max_size,
        docker_log_max_file=dockerd.log_max_file,
        published_ports=(cfg.nginx.http_port, cfg.nginx.https_port),
    )


def bootstrap_steps(cfg: StackConfig, swarm_node: bool = False) -> list[BootstrapStep]:
    steps = render_bootstrap_steps(bootstrap_settings(cfg, swarm_node))
    if not cfg.bootstrap.harden_ssh:
        steps = [s for s in steps if s.name != "hardening"]
    return steps


class Bootstrap(pulumi.ComponentResource):
    steps: list[command.remote.Command]
    done: pulumi.Output[str]
    preflight_report: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        connection: command.remote.ConnectionArgs,
        opts: pulumi.ResourceOptions | None = None,
        step_prefix: str = "bootstrap",  # a swarm bootstraps several servers: one prefix each
        swarm_node: bool = False,  # daemon.json without live-restore (swarm mode refuses it)
    ):
        super().__init__("ai-meeting:bootstrap:Bootstrap", name, None, opts)
        self.steps = []
        previous: list[pulumi.Resource] = []
        report: pulumi.Output[str] = pulumi.Output.from_input("")
        steps = bootstrap_steps(cfg, swarm_node)
        for step in steps:
            cmd = command.remote.Command(
                f"{step_prefix}-{step.name}",
                connection=connection,
                # The script goes over stdin: nothing of it lands in the server's process list.
                create="sudo -n bash -s",
                stdin=step.script,
                triggers=[sha256(step.script)],
                opts=pulumi.ResourceOptions(parent=self, depends_on=previous),
            )
            if step.name == "preflight":
                # Warnings go to stderr; the report keeps both streams.
                report = pulumi.Output.concat(cmd.stdout, "\n", cmd.stderr)
            self.steps.append(cmd)
            previous = [cmd]
        self.preflight_report = report
        # Resolves only when the last step finished: the Docker provider waits on it.
        self.done = pulumi.Output.all(*[s.id for s in self.steps]).apply(lambda ids: sha256(",".join(ids)))
        report.apply(_warn_on_preflight)
        self.register_outputs({"steps": [s.name for s in steps], "preflight": report})


def _warn_on_preflight(text: str) -> None:
    warnings = [line for line in (text or "").splitlines() if "WARN" in line]
    for line in warnings:
        pulumi.log.warn(f"preflight: {line.strip()}")
