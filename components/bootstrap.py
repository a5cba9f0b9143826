"""Server bootstrap over SSH (R1, R2, R3, R18), prod only.

One remote command per step, each carrying the sha256 of its script in `triggers`, so a
changed step re-runs alone and an unchanged one never re-runs (pulumi-command #37). Steps
run in order; scripts are idempotent, so an interrupted `up` is finished by the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from render.bootstrap import BootstrapSettings, BootstrapStep, render_bootstrap_steps

from .target import sha256


@dataclass(frozen=True)
class BootstrapArgs:
    settings: BootstrapSettings  # what the rendered steps need (render/bootstrap.py)
    harden_ssh: bool = True
    server_id: str = ""  # the server's machine id: a new server gets every step again


def bootstrap_steps(args: BootstrapArgs) -> list[BootstrapStep]:
    steps = render_bootstrap_steps(args.settings)
    if not args.harden_ssh:
        steps = [s for s in steps if s.name != "hardening"]
    return steps


class Bootstrap(pulumi.ComponentResource):
    steps: list[command.remote.Command]
    done: pulumi.Output[str]
    preflight_report: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: BootstrapArgs,
        connection: command.remote.ConnectionArgs,
        opts: pulumi.ResourceOptions | None = None,
        step_prefix: str = "bootstrap",  # a swarm bootstraps several servers: one prefix each
    ):
        super().__init__("ai-meeting:bootstrap:Bootstrap", name, None, opts)
        self.steps = []
        previous: list[pulumi.Resource] = []
        report: pulumi.Output[str] = pulumi.Output.from_input("")
        for step in bootstrap_steps(args):
            cmd = command.remote.Command(
                f"{step_prefix}-{step.name}",
                connection=connection,
                # The script goes over stdin: nothing of it lands in the server's process list.
                create="sudo -n bash -s",
                stdin=step.script,
                triggers=[sha256(step.script), *([args.server_id] if args.server_id else [])],
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
        self.register_outputs({"steps": [s.name for s in bootstrap_steps(args)], "preflight": report})


def _warn_on_preflight(text: str) -> None:
    warnings = [line for line in (text or "").splitlines() if "WARN" in line]
    for line in warnings:
        pulumi.log.warn(f"preflight: {line.strip()}")
