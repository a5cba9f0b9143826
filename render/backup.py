"""Backup and restore scripts and their cron entry (plan §8.3-8.4, R16), as pure functions."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ._templating import check_cron_schedule, check_ident, check_path, check_positive, render


@dataclass(frozen=True)
class OffsiteSettings:
    """Where each complete backup is copied, encrypted (offsite-backup.sh). The credentials and
    the age recipient are files on the server (`<install_dir>/etc`, 0600), written by the deploy
    from secrets: nothing secret is in a script."""

    endpoint: str  # http(s)://host[:port]
    bucket: str
    prefix: str = ""
    retention_days: int = 90

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", self.endpoint):
            raise ValueError(f"offsite.endpoint: {self.endpoint!r} must be http(s)://host[:port]")
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", self.bucket):
            raise ValueError(f"offsite.bucket: {self.bucket!r} is not an S3 bucket name")
        if not re.match(r"^([a-z0-9][a-z0-9._-]*/)*$", self.prefix):
            raise ValueError(f"offsite.prefix: {self.prefix!r} must be empty or like prod/ (a-z0-9._- parts)")
        check_positive(self.retention_days, "offsite.retention_days", 1)

    @property
    def target(self) -> str:
        """The mc path of the copies: alias `offsite`, bucket, prefix."""
        return f"offsite/{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class BackupSettings:
    install_dir: str = "/opt/ai-meeting"
    backup_dir: str = "/opt/ai-meeting/backups"
    retention_days: int = 30
    schedule: str = "0 2 * * *"
    postgres_container: str = "ai-meeting-postgres"
    redis_container: str = "ai-meeting-redis"
    minio_container: str = "ai-meeting-minio"
    db_name: str = "ai_meeting"
    db_user: str = "ai_meeting"
    minio_data_path: str = "/data"
    redis_data_path: str = "/data"
    # Redis AOF layout (Redis 7 multi-part AOF); the restore rebuilds it from the snapshot.
    redis_appendonly: bool = True
    redis_aof_dirname: str = "appendonlydir"
    redis_aof_filename: str = "appendonly.aof"
    # Containers stopped during a restore so nothing writes meanwhile (the API replicas), and
    # started again after it: named here, or found when the restore runs by these
    # `key=value` labels (the replicas are auto-named, so their names change on every rollout).
    app_containers: tuple[str, ...] = ()
    app_labels: tuple[str, ...] = ()
    # Reloaded after the API containers are started again: it resolves the replicas' names
    # only when it loads its config, and a restarted container may get another address.
    proxy_container: str = "ai-meeting-nginx"
    # On a swarm node: the containers above are the services' names, found by label when the
    # script runs (task containers have generated names).
    swarm: bool = False
    api_service: str = "ai-meeting-api"  # swarm: scaled to 0 during a restore
    # The weekly restore drill (restore-drill.sh); None: no drill.
    drill_schedule: str | None = "30 4 * * 0"
    # A copy of each complete backup off the server, encrypted (offsite-backup.sh); None: none.
    offsite: OffsiteSettings | None = None

    def __post_init__(self) -> None:
        check_path(self.install_dir, "install_dir")
        check_path(self.backup_dir, "backup_dir")
        if self.backup_dir.rstrip("/") in ("", "/") or self.backup_dir.rstrip("/") == self.install_dir.rstrip("/"):
            raise ValueError(f"backup_dir: {self.backup_dir!r} must be its own directory")
        check_positive(self.retention_days, "retention_days", 1)
        check_cron_schedule(self.schedule, "schedule")
        if self.drill_schedule is not None:
            check_cron_schedule(self.drill_schedule, "drill_schedule")
        for field in ("postgres_container", "redis_container", "minio_container", "proxy_container", "api_service", "db_name", "db_user",
                      "redis_aof_dirname", "redis_aof_filename"):
            check_ident(getattr(self, field), field)
        check_path(self.minio_data_path, "minio_data_path")
        check_path(self.redis_data_path, "redis_data_path")
        if self.minio_data_path.rstrip("/") == "" or self.redis_data_path.rstrip("/") == "":
            raise ValueError("data paths must not be /")
        if isinstance(self.app_containers, str):
            raise ValueError("app_containers: a tuple of container names is required")
        for i, c in enumerate(self.app_containers):
            check_ident(c, f"app_containers[{i}]")
        if isinstance(self.app_labels, str):
            raise ValueError("app_labels: a tuple of key=value labels is required")
        for i, label in enumerate(self.app_labels):
            key, eq, value = label.partition("=")
            if not eq:
                raise ValueError(f"app_labels[{i}]: {label!r} must be key=value")
            check_ident(key, f"app_labels[{i}] key")
            check_ident(value, f"app_labels[{i}] value")

    def under_install_dir(self, relative: str) -> str:
        return f"{self.install_dir.rstrip('/')}/{relative}"

    # Where the deploy puts each script (and reads its files) on the server.
    backup_script_path = property(lambda self: self.under_install_dir("bin/backup.sh"))
    restore_script_path = property(lambda self: self.under_install_dir("bin/restore.sh"))
    drill_script_path = property(lambda self: self.under_install_dir("bin/restore-drill.sh"))
    offsite_script_path = property(lambda self: self.under_install_dir("bin/offsite-backup.sh"))
    offsite_restore_path = property(lambda self: self.under_install_dir("bin/offsite-restore.sh"))
    etc_dir = property(lambda self: self.under_install_dir("etc"))
    log_file = property(lambda self: self.under_install_dir("logs/backup.log"))

CRON_FILE_PATH = "/etc/cron.d/ai-meeting-backup"  # no dots in the name: cron ignores such files


def render_backup_script(s: BackupSettings) -> str:
    return render("backup.sh.j2", s=s)


def render_restore_script(s: BackupSettings) -> str:
    return render("restore.sh.j2", s=s)


def render_restore_drill_script(s: BackupSettings) -> str:
    return render("restore-drill.sh.j2", s=s)


def render_offsite_backup_script(s: BackupSettings) -> str:
    assert s.offsite is not None
    return render("offsite-backup.sh.j2", s=s, o=s.offsite)


def render_offsite_restore_script(s: BackupSettings) -> str:
    assert s.offsite is not None
    return render("offsite-restore.sh.j2", s=s, o=s.offsite)


def render_backup_cron(s: BackupSettings) -> str:
    return render("backup.cron.j2", s=s, lock_file="/run/lock/ai-meeting-backup.lock",
                  script_path=s.backup_script_path, drill_script_path=s.drill_script_path)
