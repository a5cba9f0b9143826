"""Backups (R16): nightly pg_dump, Redis RDB, MinIO data and config, 30-day retention,
the restore script and the weekly restore drill, installed on the server with their cron entries.

Backups need the server's cron and disk, so they are installed on ssh targets only; a dev
engine on a laptop gets no cron jobs written into the operator's machine.
"""

from __future__ import annotations

import pulumi

from render.backup import (BackupSettings, render_backup_cron, render_backup_script, render_restore_drill_script,
                           render_restore_script)

from .target import HostShell, install_files_script, sha256


class Backups(pulumi.ComponentResource):
    installed: pulumi.Resource

    def __init__(
        self,
        name: str,
        settings: BackupSettings,
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:backups:Backups", name, None, opts)
        s = settings
        script = install_files_script(
            {s.backup_script_path: render_backup_script(s), s.restore_script_path: render_restore_script(s),
             s.drill_script_path: render_restore_drill_script(s)},
            cron_name="ai-meeting-backup",
            cron=render_backup_cron(s),
        ) + f"\nsudo install -d -m 0700 {s.backup_dir}"
        self.installed = shell.run(
            "backup-install",
            script,
            # `destroy` stops the schedule and removes the scripts; the backups themselves stay.
            delete=f"sudo rm -f /etc/cron.d/ai-meeting-backup {s.backup_script_path} {s.restore_script_path} {s.drill_script_path}",
            parent=self,
            triggers=[sha256(script)],
            depends_on=depends_on,
        )
        self.register_outputs(
            {"schedule": s.schedule, "dir": s.backup_dir, "retention_days": s.retention_days}
        )
