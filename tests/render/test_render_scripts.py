"""Every rendered shell script: bash -n and shellcheck -S style clean; cron files well formed;
bootstrap/backup/certbot settings validation and the safe behaviours that need no server."""
from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from tests.prerequisites import unavailable

from render.backup import (BackupSettings, OffsiteSettings, render_backup_cron, render_backup_script,
                           render_offsite_backup_script, render_offsite_restore_script, render_restore_drill_script,
                           render_restore_script)
from render.bootstrap import STEP_ORDER, BootstrapSettings, layout_dirs, render_bootstrap_steps
from render.certbot import (CertbotSettings, render_certbot_cron, render_certbot_deploy_hook,
                            render_certbot_issue_script)
from render.postgres_upgrade import UpgradeSettings, render_upgrade_script

from render_testlib import check_cron_file, shell_check

BOOTSTRAP_VARIANTS = {
    "defaults": BootstrapSettings(deploy_user="deploy"),
    "letsencrypt-fail": BootstrapSettings(deploy_user="ops", letsencrypt=True, preflight_mode="fail",
                                          ssh_port=2222, allowed_tcp_ports=(80, 443), timezone="UTC",
                                          install_dir="/srv/ai-meeting", prune_unused_images=True),
    "small": BootstrapSettings(deploy_user="ubuntu", min_cpus=2, min_memory_gb=4, min_disk_gb=40,
                               nofile=1048576, timezone="America/Argentina/Buenos_Aires"),
    # What a Swarm node gets: no live-restore (swarm mode refuses it), Docker's userland proxy.
    "swarm-node": BootstrapSettings(deploy_user="deploy", docker_live_restore=False, docker_userland_proxy=True,
                                    published_ports=(8080, 8443), login_banner="Private system.\nAccess is logged."),
}
BACKUP_VARIANTS = {
    "defaults": BackupSettings(),
    "custom": BackupSettings(install_dir="/srv/am", backup_dir="/backup/am", retention_days=7,
                             schedule="30 1 * * 1-5", app_containers=("ai-meeting-api-1", "ai-meeting-api-2"),
                             app_labels=("ai-meeting.service=api", "ai-meeting.stack=prod"), redis_appendonly=False),
    "swarm": BackupSettings(swarm=True, api_service="ai-meeting-api", app_labels=("ai-meeting.name=ai-meeting-api",)),
    "offsite": BackupSettings(offsite=OffsiteSettings(endpoint="https://s3.example.com", bucket="aim-backups", prefix="prod/")),
    "swarm-offsite": BackupSettings(swarm=True, offsite=OffsiteSettings(endpoint="http://10.0.0.9:9000", bucket="b-1")),
}
CERTBOT_VARIANTS = {
    "prod": CertbotSettings(domains=("ai-meeting.com", "www.ai-meeting.com"), email="ops@ai-meeting.com"),
    "pebble": CertbotSettings(domains=("ai-meeting.test",), email="ops@ai-meeting.test",
                              acme_server="https://127.0.0.1:14000/dir", http_01_port=5002,
                              extra_certbot_args=("--no-verify-ssl",), config_dir="/tmp/le/config"),
    "swarm": CertbotSettings(domains=("ai-meeting.com",), email="ops@ai-meeting.com",
                             nginx_service="ai-meeting-nginx", challenge="webroot"),
}
UPGRADE_VARIANTS = {
    "local": UpgradeSettings(mode="refuse", container="aim-postgres", volume="aim-postgres-data", image="sha256:" + "a" * 64,
                             db_name="ai_meeting", db_user="ai_meeting", app_label="ai-meeting.name=aim-api",
                             proxy_container="aim-nginx", docker_cli="docker -H unix:///var/run/docker.sock"),
    "server": UpgradeSettings(mode="dump-restore", container="ai-meeting-postgres", volume="ai-meeting-postgres-data",
                              image="registry.example.com:5000/postgres:17.2", db_name="meet", db_user="meet_owner",
                              app_label="ai-meeting.name=ai-meeting-api", proxy_container="ai-meeting-nginx"),
}


def all_scripts():
    for v, s in BOOTSTRAP_VARIANTS.items():
        for step in render_bootstrap_steps(s):
            yield f"bootstrap-{v}-{step.name}", step.script
    for v, s in BACKUP_VARIANTS.items():
        yield f"backup-{v}", render_backup_script(s)
        yield f"restore-{v}", render_restore_script(s)
        yield f"restore-drill-{v}", render_restore_drill_script(s)
        if s.offsite:
            yield f"offsite-backup-{v}", render_offsite_backup_script(s)
            yield f"offsite-restore-{v}", render_offsite_restore_script(s)
    for v, s in UPGRADE_VARIANTS.items():
        yield f"postgres-upgrade-{v}", render_upgrade_script(s)
    for v, s in CERTBOT_VARIANTS.items():
        yield f"certbot-issue-{v}", render_certbot_issue_script(s)
        yield f"certbot-hook-{v}", render_certbot_deploy_hook(s)


SCRIPTS = dict(all_scripts())


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_is_clean(name, tmp_path):
    script = SCRIPTS[name]
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    shell_check(script, tmp_path, name + ".sh")


@pytest.mark.parametrize("name", sorted(n for n in SCRIPTS if n.startswith("bootstrap-")))
def test_bootstrap_scripts_noninteractive(name):
    assert "export DEBIAN_FRONTEND=noninteractive" in SCRIPTS[name]


def test_cron_files():
    for s in BACKUP_VARIANTS.values():
        jobs = check_cron_file(render_backup_cron(s))
        assert len(jobs) == 2 and jobs[0].startswith(s.schedule + " root flock -n ")
        assert s.backup_script_path in jobs[0]
        # The weekly drill waits for a running backup (same lock) instead of skipping.
        assert jobs[1].startswith(f"{s.drill_schedule} root flock -w 7200 ") and s.drill_script_path in jobs[1]
    no_drill = BackupSettings(drill_schedule=None)
    assert len(check_cron_file(render_backup_cron(no_drill))) == 1
    for s in CERTBOT_VARIANTS.values():
        jobs = check_cron_file(render_certbot_cron(s))
        assert len(jobs) == 1 and " root certbot renew " in jobs[0]
        assert f"--webroot -w {s.webroot}" in jobs[0] and f"--deploy-hook {s.deploy_hook_path}" in jobs[0]
        assert ("--server" in jobs[0]) == bool(s.acme_server)
    hardening = {st.name: st.script for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["defaults"])}["hardening"]
    cron = hardening.split("<<'CRON' || true\n")[1].split("\nCRON\n")[0] + "\n"
    jobs = check_cron_file(cron)
    assert jobs == ["30 3 * * 0 root docker image prune --force >/dev/null 2>&1"]


def test_prune_never_touches_volumes():
    for s in BOOTSTRAP_VARIANTS.values():
        for st in render_bootstrap_steps(s):
            for line in st.script.splitlines():
                if not line.lstrip().startswith("#"):
                    assert "--volumes" not in line and "system prune" not in line, line


def test_bootstrap_steps_and_order():
    names = [st.name for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["defaults"])]
    assert names == [n for n in STEP_ORDER if n != "certbot"]
    names = [st.name for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["letsencrypt-fail"])]
    assert names == list(STEP_ORDER)


def test_bootstrap_content():
    steps = {st.name: st.script for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["letsencrypt-fail"])}
    assert "for port in 2222 80 443; do" in steps["firewall"]  # ssh port first, before enabling
    assert steps["firewall"].index("ufw allow") < steps["firewall"].index("ufw --force enable")
    assert "ubuntu:22.04) pkgs=(docker.io docker-compose-v2)" in steps["docker"]
    assert "debian:12) pkgs=(docker.io docker-compose)" in steps["docker"]
    assert "MODE=fail" in steps["preflight"]
    assert "make_dir /srv/ai-meeting/ssl 0700 yes" in steps["layout"]
    assert "make_dir /srv/ai-meeting/backups 0700 yes" in steps["layout"]
    assert "make_dir /srv/ai-meeting/acme 0755 yes" in steps["layout"]
    assert "PermitRootLogin no" in steps["hardening"] and "sshd -t" in steps["hardening"]
    assert "APT::Periodic::Unattended-Upgrade \"1\";" in steps["hardening"]
    assert "apt_install certbot" in steps["certbot"]
    assert "DefaultLimitNOFILE=65536" in steps["limits"]
    assert steps["timezone"].count("TZ_WANTED=UTC") == 1


def test_layout_dirs_plan_4_1():
    paths = {p for p, _, _ in layout_dirs(BOOTSTRAP_VARIANTS["defaults"])}
    for sub in ("nginx", "ssl", "data/postgres", "data/redis", "data/minio", "logs/nginx", "logs/app", "bin", "backups"):
        assert f"/opt/ai-meeting/{sub}" in paths


@pytest.mark.parametrize("kw,match", [
    ({"deploy_user": "root"}, "root"), ({"deploy_user": "Bad User"}, "deploy_user"),
    ({"preflight_mode": "maybe"}, "preflight_mode"), ({"ssh_port": 0}, "ssh_port"),
    ({"allowed_tcp_ports": ()}, "allowed_tcp_ports"), ({"timezone": "Asia/Shanghai; rm -rf /"}, "timezone"),
    ({"install_dir": "/"}, "install_dir"), ({"install_dir": "relative"}, "install_dir"),
    ({"min_docker_version": "latest"}, "min_docker_version"), ({"nofile": 10}, "nofile"),
    ({"docker_log_max_size": "20 MB"}, "docker_log_max_size"), ({"docker_log_max_file": 0}, "docker_log_max_file"),
    ({"published_ports": ()}, "published_ports"), ({"published_ports": (80, 70000)}, "published_ports"),
    ({"shell_timeout": 5}, "shell_timeout"), ({"login_banner": ""}, "login_banner"),
    ({"login_banner": "hi\nBANNER\nrm -rf /"}, "login_banner"), ({"login_banner": "bell\a"}, "login_banner"),
])
def test_bootstrap_invalid(kw, match):
    base = {"deploy_user": "deploy"}
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        BootstrapSettings(**base)


@pytest.mark.parametrize("kw,match", [
    ({"retention_days": 0}, "retention_days"), ({"schedule": "daily"}, "schedule"),
    ({"schedule": "0 2 * *"}, "schedule"), ({"postgres_container": "pg; rm -rf /"}, "postgres_container"),
    ({"backup_dir": "/"}, "backup_dir"), ({"db_name": "$(id)"}, "db_name"), ({"minio_data_path": "/"}, "data paths"),
    ({"app_labels": ("ai-meeting.service",)}, "key=value"), ({"app_labels": ("a=b; rm -rf /",)}, "app_labels"),
])
def test_backup_invalid(kw, match):
    with pytest.raises(ValueError, match=match):
        BackupSettings(**kw)


@pytest.mark.parametrize("kw,match", [
    ({"domains": ()}, "domains"), ({"domains": ("*.ai-meeting.com",)}, "wildcard"),
    ({"email": "not-an-email"}, "email"), ({"acme_server": "http://x/dir"}, "acme_server"),
    ({"extra_certbot_args": ("--foo; rm -rf /",)}, "extra_certbot_args"),
])
def test_certbot_invalid(kw, match):
    base = {"domains": ("ai-meeting.com",), "email": "ops@ai-meeting.com"}
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        CertbotSettings(**base)


# ---- scripts run for real where it is safe on this machine ---------------------------------

def test_preflight_runs_and_fail_mode_exits_nonzero(tmp_path):
    if os.geteuid() != 0:
        unavailable("preflight checks it runs as root: run the tests as root (CI does)")
    ok = BootstrapSettings(deploy_user="deploy", min_cpus=1, min_memory_gb=1, min_disk_gb=1,
                           min_docker_version="1.0", min_compose_version="0.1", install_dir=str(tmp_path / "x"))
    impossible = dataclasses.replace(ok, min_cpus=4096, preflight_mode="fail")
    warn = dataclasses.replace(impossible, preflight_mode="warn")
    script = {s.name: s.script for s in render_bootstrap_steps(impossible)}["preflight"]
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "FAILED" in r.stderr and "CPU:" in r.stderr and "minimum 4096" in r.stderr
    script = {s.name: s.script for s in render_bootstrap_steps(warn)}["preflight"]
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "WARN: CPU:" in r.stderr and "continuing" in r.stdout


def test_layout_creates_and_is_idempotent(tmp_path):
    if os.geteuid() != 0:
        unavailable("layout chowns to root: run the tests as root (CI does)")
    s = BootstrapSettings(deploy_user="deploy", install_dir=str(tmp_path / "ai-meeting"))
    script = {st.name: st.script for st in render_bootstrap_steps(s)}["layout"]
    r1 = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert "created" in r1.stdout
    assert oct(os.stat(tmp_path / "ai-meeting/ssl").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "ai-meeting/backups").st_mode & 0o777) == "0o700"
    # A container took over its data dir: a re-run must not take it back.
    os.chown(tmp_path / "ai-meeting/data/postgres", 999, 999)
    os.chmod(tmp_path / "ai-meeting/ssl", 0o755)
    r2 = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert "created" not in r2.stdout
    assert "fixed owner/mode of " + str(tmp_path / "ai-meeting/ssl") in r2.stdout
    assert os.stat(tmp_path / "ai-meeting/data/postgres").st_uid == 999
    r3 = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert "created" not in r3.stdout and "fixed" not in r3.stdout


def test_limits_idempotent_in_chroot_free_way(tmp_path):
    """The limits step writes whole drop-ins: rendering twice gives the same bytes, and the
    script has no append (>>) to limits.conf, so re-runs cannot duplicate lines."""
    s = BootstrapSettings(deploy_user="deploy")
    script = {st.name: st.script for st in render_bootstrap_steps(s)}["limits"]
    assert ">>" not in script and "limits.conf" not in script.replace("# Plan §3.1 raises nofile by appending to limits.conf", "")
    assert "/etc/security/limits.d/90-ai-meeting-nofile.conf" in script


def test_restore_refuses_without_yes_and_bad_manifest(tmp_path):
    s = BackupSettings(backup_dir=str(tmp_path / "backups"))
    restore = tmp_path / "restore.sh"
    restore.write_text(render_restore_script(s))
    b = tmp_path / "backups/20260101_020000"
    b.mkdir(parents=True)
    for name in ("postgres.sql.gz", "redis-dump.rdb", "minio-data.tar.gz"):
        (b / name).write_bytes(b"x")
    subprocess.run("sha256sum postgres.sql.gz redis-dump.rdb minio-data.tar.gz > MANIFEST.sha256",
                   shell=True, cwd=b, check=True)
    r = subprocess.run(["bash", str(restore), "20260101_020000"], capture_output=True, text=True)
    assert r.returncode == 2 and "--yes" in r.stderr and "This will replace" in r.stdout
    (b / "redis-dump.rdb").write_bytes(b"tampered")
    r = subprocess.run(["bash", str(restore), str(b), "--yes"], capture_output=True, text=True)
    assert r.returncode != 0 and "checksum mismatch" in r.stderr
    r = subprocess.run(["bash", str(restore)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def _daemon_keys(script: str) -> dict:
    import json
    import re

    return json.loads(re.search(r"^OURS='(\{.*\})'$", script, re.M).group(1))


def test_docker_daemon_json_per_target():
    single = {st.name: st.script for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["defaults"])}["docker"]
    node = {st.name: st.script for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["swarm-node"])}["docker"]
    assert _daemon_keys(single) == {"live-restore": True, "log-driver": "json-file",
                                    "log-opts": {"max-file": "5", "max-size": "20m"},
                                    "no-new-privileges": True, "userland-proxy": False}
    assert _daemon_keys(node)["live-restore"] is False and _daemon_keys(node)["userland-proxy"] is True
    # Written only when it differs; checked before (Docker >= 23) and after the restart (rolled back).
    assert 'cmp -s "$wanted" "$DAEMON_JSON"' in single and "dockerd --validate --config-file" in single
    assert "previous file restored" in single
    # The restart guard and the live-restore check only where live-restore is on.
    assert "--dports 80,443 " in single and "LiveRestoreEnabled" in single
    assert "ai-meeting-dockerd-start" not in node and "LiveRestoreEnabled" not in node


def test_docker_daemon_json_merge_keeps_the_operators_keys(tmp_path):
    """The step's jq merge, run here: an operator's key survives, ours win, the output is stable."""
    import json
    import shutil

    if not shutil.which("jq"):
        unavailable("jq is not installed")
    ours = json.dumps(_daemon_keys({st.name: st.script for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["defaults"])}["docker"]))
    existing = tmp_path / "daemon.json"
    existing.write_text(json.dumps({"registry-mirrors": ["https://mirror.internal"], "live-restore": False,
                                    "log-opts": {"labels": "app"}}))
    merged = subprocess.run(["jq", "-S", "--argjson", "ours", ours, ". * $ours", str(existing)],
                            capture_output=True, text=True, check=True).stdout
    got = json.loads(merged)
    assert got["registry-mirrors"] == ["https://mirror.internal"] and got["live-restore"] is True
    assert got["log-opts"] == {"labels": "app", "max-file": "5", "max-size": "20m"}
    existing.write_text(merged)
    again = subprocess.run(["jq", "-S", "--argjson", "ours", ours, ". * $ours", str(existing)],
                           capture_output=True, text=True, check=True).stdout
    assert again == merged  # a re-run finds nothing to change


def test_hardening_host_policy():
    steps = {st.name: st.script for st in render_bootstrap_steps(BOOTSTRAP_VARIANTS["defaults"])}
    h = steps["hardening"]
    for setting in ("PermitRootLogin no", "MaxAuthTries 3", "AllowTcpForwarding no", "AllowAgentForwarding no",
                    "X11Forwarding no", "LogLevel VERBOSE", "ClientAliveCountMax 2"):
        assert f'"{setting}"' in h, setting
    assert "set_login_def UMASK 027" in h and "set_login_def PASS_MAX_DAYS 365" in h
    assert "apt_install libpam-pwquality libpam-tmpdir" in h and "apt_install needrestart apt-listchanges debsums" in h
    assert "$nrconf{restart} = 'l';" in h  # needrestart never restarts services by itself
    assert "*    hard core 0" in h and "Storage=none" in h and "/etc/fail2ban/jail.local" in h
    assert "net.ipv4.conf.all.send_redirects = 0" in h
    # Kernel-wide sysctls never from inside a container; never the one-way switches.
    assert "systemd-detect-virt --container" in h and "kernel.kptr_restrict = 2" in h
    assert "modules_disabled" not in h and "unprivileged_bpf_disabled" not in h
    assert "net.ipv4.conf.all.forwarding" not in h and "ip_forward =" not in h  # Docker routes with it
    assert "install usb-storage /bin/false" in h and "Authorised access only" in h


def test_swarm_placeholder_then_reload_of_the_local_nginx_task(tmp_path):
    """On a swarm's edge node: `--placeholder` writes a self-signed pair only when none is
    there (0600 key), and the deploy hook reloads the nginx task found by its service label."""
    install = tmp_path / "opt"
    s = CertbotSettings(domains=("meet.test",), email="ops@meet.test", install_dir=str(install),
                        config_dir=str(tmp_path / "le"), nginx_service="aim-swarm-nginx", challenge="webroot")
    issue, hook = tmp_path / "issue.sh", tmp_path / "hook.sh"
    issue.write_text(render_certbot_issue_script(s))
    hook.write_text(render_certbot_deploy_hook(s))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls"
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >>{calls}\n"
        'case "$1" in ps) echo c0ffee ;; inspect) echo true ;; esac\n'
    )
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    first = subprocess.run(["bash", str(issue), "--placeholder"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    key, chain = install / "ssl/privkey.pem", install / "ssl/fullchain.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and "placeholder" in subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(chain)], capture_output=True, text=True).stdout
    before = chain.read_bytes()
    again = subprocess.run(["bash", str(issue), "--placeholder"], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and chain.read_bytes() == before and "already" in again.stdout
    # A renewal: the hook installs the new pair and reloads the task on this node.
    live = tmp_path / "le/live/meet.test"
    live.mkdir(parents=True)
    (live / "fullchain.pem").write_text("new chain")
    (live / "privkey.pem").write_text("new key")
    done = subprocess.run(["bash", str(hook)], capture_output=True, text=True, env={**env, "RENEWED_LINEAGE": str(live)})
    assert done.returncode == 0, done.stderr
    assert chain.read_text() == "new chain" and oct(key.stat().st_mode & 0o777) == "0o600"
    log = calls.read_text()
    assert "ps -q --filter label=com.docker.swarm.service.name=aim-swarm-nginx" in log
    assert "exec c0ffee nginx -s reload" in log
