"""Backups (R16): nightly pg_dump, Redis RDB, MinIO data and config, 30-day retention,
the restore script and the weekly restore drill, installed on the server with their cron entries;
with `backup.offsite`, an encrypted copy of each backup off the server (components/offsite.py).

Backups need the server's cron and disk, so they are installed on ssh targets only; a dev
engine on a laptop gets no cron jobs written into the operator's machine.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi

from render.backup import (BackupSettings, render_backup_cron, render_backup_script, render_offsite_backup_script,
                           render_offsite_restore_script, render_restore_drill_script, render_restore_script)

from .offsite import OffsiteKey
from .target import HostShell, install_files_script, sha256


@dataclass(frozen=True)
class OffsiteCredentials:
    access_key: str
    secret_key: pulumi.Input[str]  # secret
    protect: bool  # the key's seed: never regenerated, kept on `destroy` (old copies need it)


class Backups(pulumi.ComponentResource):
    installed: pulumi.Resource
    offsite_key: OffsiteKey | None

    def __init__(
        self,
        name: str,
        settings: BackupSettings,
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
        offsite: OffsiteCredentials | None = None,
    ):
        super().__init__("ai-meeting:backups:Backups", name, None, opts)
        s = settings
        files = {s.backup_script_path: render_backup_script(s), s.restore_script_path: render_restore_script(s),
                 s.drill_script_path: render_restore_drill_script(s)}
        self.offsite_key = None
        secrets_written: list[pulumi.Resource] = []
        if s.offsite is not None:
            assert offsite is not None
            files[s.offsite_script_path] = render_offsite_backup_script(s)
            files[s.offsite_restore_path] = render_offsite_restore_script(s)
            self.offsite_key = OffsiteKey("offsite-key", offsite.protect, pulumi.ResourceOptions(parent=self))
            # The recipient (public) and mc's credentials, as two 0600 files under etc/: from
            # stdin, never on a command line or in a script.
            env = pulumi.Output.all(offsite.secret_key).apply(
                lambda v: offsite_mc_config(s, offsite.access_key, v[0]) + "\n")
            stdin = pulumi.Output.secret(pulumi.Output.concat(self.offsite_key.recipient, "\n", env))
            etc = shlex.quote(s.etc_dir)
            write = (
                "set -euo pipefail\n"
                f"sudo install -d -m 0700 {etc}\n"
                "IFS= read -r recipient\nIFS= read -r env\n"
                f"printf '%s\\n' \"$recipient\" | sudo install -m 0600 /dev/stdin {etc}/offsite-recipient\n"
                f"printf '%s\\n' \"$env\" | sudo install -m 0600 /dev/stdin {etc}/offsite-mc.json\n"
            )
            secrets_written.append(shell.run(
                "backup-offsite-secrets", write, stdin=stdin, parent=self,
                triggers=[stdin.apply(sha256)],
                delete=f"sudo rm -f {etc}/offsite-mc.json {etc}/offsite-recipient",
                depends_on=depends_on,
            ))
        script = install_files_script(files, cron_name="ai-meeting-backup", cron=render_backup_cron(s)) \
            + f"\nsudo install -d -m 0700 {s.backup_dir}"
        self.installed = shell.run(
            "backup-install",
            script,
            # `destroy` stops the schedule and removes the scripts; the backups themselves stay.
            delete="sudo rm -f /etc/cron.d/ai-meeting-backup " + " ".join(files),
            parent=self,
            triggers=[sha256(script)],
            depends_on=[*depends_on, *secrets_written],
        )
        self.register_outputs(
            {"schedule": s.schedule, "dir": s.backup_dir, "retention_days": s.retention_days}
        )


def offsite_mc_config(s: BackupSettings, access_key: str, secret_key: str) -> str:
    from .offsite import mc_config

    assert s.offsite is not None
    return mc_config(s.offsite.endpoint, access_key, secret_key)
