"""Where the stack runs: the Docker provider, and shell commands on the Docker host.

dev talks to the local engine and runs host commands locally; prod talks to the server's
engine over ssh:// and runs host commands with pulumi_command.remote over the same SSH key.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from config.model import LocalTarget, SshTarget


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ssh_material_dir(stack: str) -> Path:
    """Docker's ssh:// transport runs the system `ssh`, which needs the key as a file."""
    base = Path(os.environ.get("AI_MEETING_CACHE", Path.home() / ".cache" / "ai-meeting"))
    return base / "ssh" / stack


def write_private_file(path: Path, content: str) -> None:
    """Write a secret file with mode 0600 in a 0700 directory (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content if content.endswith("\n") else content + "\n")
    os.chmod(path, 0o600)


def ssh_options(target: SshTarget, stack: str) -> list[str]:
    """Explicit ssh options for Docker over SSH (pulumi-docker #635, #702): key, host key
    policy, no prompts, a bounded connect time and keep-alives for long image pulls."""
    material = ssh_material_dir(stack)
    key = material / "id_deploy"
    write_private_file(key, target.private_key.get_secret_value())
    known_hosts = material / "known_hosts"
    if target.host_key:
        host = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        write_private_file(known_hosts, f"{host} {target.host_key}")
        checking = "yes"
    else:
        known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        checking = "accept-new"
    return [
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", f"StrictHostKeyChecking={checking}",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=15",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
    ]


@dataclass
class HostShell:
    """Runs idempotent shell commands on the Docker host (local machine or server)."""

    target: LocalTarget | SshTarget
    connection: command.remote.ConnectionArgs | None
    stack: str
    # The server's /etc/machine-id (server_identity): in every remote command's triggers, so a
    # new server at the same address (disaster recovery) gets every host step again.
    server_id: str = ""

    def run_now(self, script: str, timeout: int = 60) -> subprocess.CompletedProcess:
        """Run a script on the Docker host right away, from the program itself (resource
        hooks): locally with bash, on a server with the same ssh key and options."""
        target = self.target
        if isinstance(target, LocalTarget):
            argv = ["bash", "-c", script]
        else:
            argv = ["ssh", *ssh_options(target, self.stack), "-p", str(target.port), f"{target.user}@{target.host}", script]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    @property
    def docker_cli(self) -> str:
        # Locally the operator's docker CLI is pointed at the configured engine explicitly;
        # on the server the deploy user talks to the local engine.
        if isinstance(self.target, LocalTarget):
            return f"docker -H {self.target.docker_host}"
        return "docker"

    def run(
        self,
        name: str,
        create: pulumi.Input[str],
        *,
        parent: pulumi.Resource,
        triggers: Sequence[pulumi.Input[object]] = (),
        delete: str | None = None,
        depends_on: Sequence[pulumi.Resource] = (),
        secret_output: bool = False,
        stdin: pulumi.Input[str] | None = None,
    ) -> pulumi.CustomResource:
        opts = pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            # The command's stdout can carry what the script printed; keep it out of plain state.
            additional_secret_outputs=["stdout", "stderr"] if secret_output else None,
            # `delete` undoes what `create` did (removes the files it installed): on a
            # replacement it must run first, or the old one's delete removes what the new one
            # just installed (seen: a changed backup config left no backup.sh on the server).
            delete_before_replace=delete is not None,
        )
        if self.connection is None:
            return command.local.Command(
                name,
                create=create,
                delete=delete,
                triggers=list(triggers),
                stdin=stdin,
                interpreter=["/bin/bash", "-c"],
                opts=opts,
            )
        return command.remote.Command(
            name,
            connection=self.connection,
            create=create,
            delete=delete,
            triggers=[*triggers, self.server_id] if self.server_id else list(triggers),
            stdin=stdin,
            opts=opts,
        )


def server_identity(shell: HostShell) -> str:
    """The server's machine id, read once per run (a server keeps it across reboots; a new one,
    even at the same address, has another). A server without one gets "" (stable: nothing then
    depends on it); a failed login fails the run, or every host step would look changed."""
    if shell.connection is None:
        return ""
    try:
        out = shell.run_now("cat /etc/machine-id 2>/dev/null || true", timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise pulumi.RunError(f"could not read the server's /etc/machine-id over ssh: {exc}") from None
    if out.returncode != 0:
        raise pulumi.RunError(f"could not read the server's /etc/machine-id over ssh (exit {out.returncode}): "
                              f"{out.stderr.strip()[-300:]}")
    ident = out.stdout.strip()
    return ident if re.fullmatch(r"[0-9a-f]{32}", ident) else ""


def ssh_connection(target: SshTarget) -> command.remote.ConnectionArgs:
    return command.remote.ConnectionArgs(
        host=target.host,
        port=target.port,
        user=target.user,
        private_key=pulumi.Output.secret(target.private_key.get_secret_value()),
        dial_error_limit=20,  # the server may still be booting or restarting sshd
        per_dial_timeout=15,
        # Pinned: the remote steps verify the server as Docker's ssh does (without it they
        # would accept any host key).
        host_key=target.host_key,
    )


def make_docker_provider(
    target: LocalTarget | SshTarget,
    stack: str,
    *,
    ready: pulumi.Input[str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> docker.Provider:
    """An explicit provider: never the ambient DOCKER_HOST. `ready` (the bootstrap's output)
    makes the host unknown until the server is prepared, so nothing talks to a Docker that
    isn't installed yet."""
    host: pulumi.Input[str] = target.docker_host
    if ready is not None:
        host = pulumi.Output.from_input(ready).apply(lambda _: target.docker_host)
    ssh_opts = ssh_options(target, stack) if isinstance(target, SshTarget) else None
    return docker.Provider("docker", host=host, ssh_opts=ssh_opts, opts=opts)


def install_files_script(files: dict[str, str], *, cron_name: str | None = None, cron: str = "") -> str:
    """A host script that writes rendered files (absolute path -> text; root-owned, 0750) and
    a cron entry, through here-docs with quoted delimiters so nothing in them is expanded."""
    lines = ["set -euo pipefail"]
    for path, text in files.items():
        lines.append(f"sudo install -d -m 0755 {os.path.dirname(path)}")
        lines.append(f"sudo tee {path} >/dev/null <<'AI_MEETING_EOF'\n{text.rstrip()}\nAI_MEETING_EOF")
        lines.append(f"sudo chmod 0750 {path}")
    if cron_name:
        lines.append(f"sudo tee /etc/cron.d/{cron_name} >/dev/null <<'AI_MEETING_EOF'\n{cron.rstrip()}\nAI_MEETING_EOF")
        lines.append(f"sudo chmod 0644 /etc/cron.d/{cron_name}")
    return "\n".join(lines)
