"""Backups (R16): nightly pg_dump, Redis RDB, MinIO data and config, 30-day retention,
and the restore script, installed on the server with a cron entry.

Backups need the server's cron and disk, so they are installed on ssh targets only; a dev
engine on a laptop gets no cron jobs written into the operator's machine.
"""

from __future__ import annotations

import pulumi

from config.model import StackConfig
from render.backup import BackupSettings, render_backup_cron, render_backup_script, render_restore_script

from .service import LABEL_KIND, LABEL_SERVICE, LABEL_STACK
from .target import HostShell, install_files_script, sha256


def backup_settings(cfg: StackConfig) -> BackupSettings:
    return BackupSettings(
        install_dir=cfg.install_dir,
        backup_dir=cfg.backup.dir,
        retention_days=cfg.backup.retention_days,
        schedule=cfg.backup.schedule,
        postgres_container=cfg.container_name("postgres"),
        redis_container=cfg.container_name("redis"),
        minio_container=cfg.container_name("minio"),
        proxy_container=cfg.container_name("nginx"),
        db_name=cfg.database.name,
        db_user=cfg.database.user,
        # The API replicas (auto-named): stopped while the data is replaced, started after.
        app_labels=(f"{LABEL_KIND}=service", f"{LABEL_SERVICE}=api", f"{LABEL_STACK}={pulumi.get_stack()}"),
    )


class Backups(pulumi.ComponentResource):
    installed: pulumi.Resource

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:backups:Backups", name, None, opts)
        s = backup_settings(cfg)
        script = install_files_script(
            {s.backup_script_path: render_backup_script(s), s.restore_script_path: render_restore_script(s)},
            cron_name="ai-meeting-backup",
            cron=render_backup_cron(s),
        ) + f"\nsudo install -d -m 0700 {cfg.backup.dir}"
        self.installed = shell.run(
            "backup-install",
            script,
            parent=self,
            triggers=[sha256(script)],
            depends_on=depends_on,
        )
        self.register_outputs(
            {"schedule": cfg.backup.schedule, "dir": cfg.backup.dir, "retention_days": cfg.backup.retention_days}
        )
