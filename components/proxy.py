"""nginx (R12, R13, R20): the only container that listens beyond 127.0.0.1.

Its config is rendered from the stack config (render/nginx.py) and put into the container.
The upstreams (API replicas and web, by container name) live in a separate file on a volume:
a rollout or a scale change rewrites that file and reloads nginx, never restarting it.
"""

from __future__ import annotations

import dataclasses

import pulumi
import pulumi_docker as docker

from config.model import StackConfig
from render.nginx import (
    Maintenance, NginxSite, maintenance_files, nginx_files_switch_script, render_nginx_conf, render_nginx_upstreams,
)

from .service import DockerSite, Health, ServiceSpec, loopback_port, service_container, upload
from .target import HostShell, sha256
from .tls import CERT_DIR_IN_NGINX, TlsMaterial


def nginx_site(cfg: StackConfig, api_upstreams: list[str], web_upstream: str, acme_webroot: str | None) -> NginxSite:
    return NginxSite(
        server_names=tuple(cfg.domains),
        api_upstreams=tuple(api_upstreams),
        web_upstream=web_upstream,
        public_https_port=cfg.nginx.https_port,
        worker_connections=cfg.nginx.worker_connections,
        client_max_body_size=cfg.nginx.client_max_body_size,
        ssl_certificate=f"{CERT_DIR_IN_NGINX}/fullchain.pem",
        ssl_certificate_key=f"{CERT_DIR_IN_NGINX}/privkey.pem",
        acme_webroot="/var/www/acme" if acme_webroot else None,
    )


def verify_script(cfg: StackConfig, docker_cli: str) -> str:
    """§7.3 after every deploy: /health and /api/health through nginx, from the Docker host.
    Retries briefly: nginx may still be reloading."""
    host = cfg.canonical_domain
    port = cfg.nginx.https_port
    base = f"https://{host}:{port}"
    resolve = f"--resolve {host}:{port}:127.0.0.1"
    checks = " && ".join(
        f"curl -fsS -k --max-time 5 {resolve} {base}{path} >/dev/null" for path in ("/health", "/api/health")
    )
    return (
        "set -euo pipefail\n"
        f"for i in $(seq 1 30); do if {checks}; then echo 'verified: /health and /api/health answer'; exit 0; fi; sleep 2; done\n"
        f"echo 'post-deploy check failed: {base}/health or /api/health does not answer' >&2\n"
        f"{docker_cli} logs --tail 20 {cfg.container_name('nginx')} >&2 || true\n"
        "exit 1"
    )


UPSTREAMS_DIR = "/etc/nginx/upstreams"
UPSTREAMS_FILE = f"{UPSTREAMS_DIR}/upstreams.conf"
MAINTENANCE_FILE = f"{UPSTREAMS_DIR}/maintenance.conf"  # + maintenance.html, switched like the upstreams
API_LOOPBACK_LISTEN = 8081  # inside the nginx container; published on 127.0.0.1:loopback_ports.api


def upstreams_script(docker_cli: str, nginx: str, volume: str, helper_image: str, conf: str) -> str:
    """Switch nginx to the current replicas without restarting it: write the upstream file into
    the volume nginx reads it from (with a helper container, so it works before nginx exists),
    then, if nginx runs, check the config, reload gracefully and wait (at most 10 s) for the
    old workers to finish their requests. A config nginx refuses is rolled back. Pulumi removes
    replaced containers only after this, so no request goes to a container that is gone."""
    in_volume = f"--network none --user 0 --entrypoint sh -v {volume}:/u {helper_image}"  # a throwaway container
    write = (
        "cat > /u/upstreams.conf.new && { [ ! -f /u/upstreams.conf ] || cp /u/upstreams.conf /u/upstreams.conf.prev; }"
        " && mv /u/upstreams.conf.new /u/upstreams.conf"
    )
    restore = f"{docker_cli} run --rm {in_volume} -c 'mv /u/upstreams.conf.prev /u/upstreams.conf'"
    return f"""set -euo pipefail
{docker_cli} run --rm -i {in_volume} -c '{write}' <<'AI_MEETING_EOF'
{conf.rstrip()}
AI_MEETING_EOF
if [ "$({docker_cli} inspect -f '{{{{.State.Running}}}}' {nginx} 2>/dev/null)" = true ]; then
  if ! {docker_cli} exec {nginx} nginx -t -q; then
    {restore}
    echo 'nginx refused the new upstreams; the previous ones stay in place' >&2
    exit 1
  fi
  {docker_cli} exec {nginx} nginx -s reload
  for _ in $(seq 1 20); do
    sleep 0.5
    {docker_cli} exec {nginx} sh -c 'grep -qs "worker process is shutting dow[n]" /proc/[0-9]*/cmdline' || break
  done
  echo 'nginx reloaded with the current upstreams'
else
  echo 'upstreams written; nginx starts with them'
fi"""


class Proxy(pulumi.ComponentResource):
    container: docker.Container
    conf: str
    upstreams_conf: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        site: DockerSite,
        image: pulumi.Input[str],
        tls_material: TlsMaterial,
        api_replicas: list[docker.Container],
        api_port: int,
        web: docker.Container,
        web_port: int,
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:proxy:Proxy", name, None, opts)
        cfg = site.cfg
        acme = tls_material.acme_webroot
        loopback_api = cfg.loopback_ports.api
        # nginx.conf itself does not name the replicas: scaling or a rollout only rewrites the
        # included upstream file and reloads (no nginx restart, no dropped connection).
        self.conf = render_nginx_conf(
            dataclasses.replace(
                nginx_site(cfg, [f"api:{api_port}"], f"web:{web_port}", acme),
                upstreams_include=UPSTREAMS_FILE,
                maintenance_include=MAINTENANCE_FILE,
                listen_api_loopback=API_LOOPBACK_LISTEN if loopback_api else None,
            )
        )
        self.upstreams_conf = pulumi.Output.all(web.name, *[c.name for c in api_replicas]).apply(
            lambda names: render_nginx_upstreams(
                nginx_site(cfg, [f"{n}:{api_port}" for n in names[1:]], f"{names[0]}:{web_port}", acme)
            )
        )
        upstreams_volume = docker.Volume(
            "nginx-upstreams",
            name=f"{cfg.name_prefix}-nginx-upstreams",
            labels=[docker.VolumeLabelArgs(label="ai-meeting.stack", value=pulumi.get_stack())],
            opts=pulumi.ResourceOptions(parent=self, provider=site.provider),
        )
        nginx_name = cfg.container_name("nginx")
        upstreams = shell.run(
            "nginx-upstreams-reload",
            pulumi.Output.all(upstreams_volume.name, image, self.upstreams_conf).apply(
                lambda v: upstreams_script(shell.docker_cli, nginx_name, v[0], v[1], v[2])
            ),
            parent=self,
            triggers=[self.upstreams_conf],
            depends_on=[*depends_on, *api_replicas, web],
        )
        m = cfg.maintenance
        files = maintenance_files(Maintenance(enabled=m.enabled, allow=tuple(m.allow), message=m.message, retry_after=m.retry_after))
        maintenance = shell.run(
            "nginx-maintenance-reload",
            pulumi.Output.all(upstreams_volume.name, image).apply(
                lambda v: nginx_files_switch_script(shell.docker_cli, nginx_name, v[0], v[1], files, "maintenance mode")
            ),
            parent=self,
            triggers=[sha256(files["maintenance.conf"] + files["maintenance.html"])],
            depends_on=depends_on,
        )
        uploads = [upload("/etc/nginx/nginx.conf", self.conf)]
        volumes: list[docker.ContainerVolumeArgs] = [
            docker.ContainerVolumeArgs(volume_name=upstreams_volume.name, container_path=UPSTREAMS_DIR, read_only=True)
        ]
        if tls_material.host_dir:
            volumes.append(docker.ContainerVolumeArgs(host_path=tls_material.host_dir, container_path=CERT_DIR_IN_NGINX, read_only=True))
        else:
            assert tls_material.certificate_pem is not None and tls_material.private_key_pem is not None
            uploads += [
                upload(f"{CERT_DIR_IN_NGINX}/fullchain.pem", tls_material.certificate_pem),
                upload(f"{CERT_DIR_IN_NGINX}/privkey.pem", tls_material.private_key_pem, mode=0o600),
            ]
        if tls_material.acme_webroot:
            volumes.append(docker.ContainerVolumeArgs(host_path=tls_material.acme_webroot, container_path="/var/www/acme", read_only=True))
        if cfg.is_remote:
            volumes.append(docker.ContainerVolumeArgs(host_path=f"{cfg.install_dir}/logs/nginx", container_path="/var/log/nginx"))
        bind = cfg.nginx.bind_address
        ports = [
            docker.ContainerPortArgs(internal=80, external=cfg.nginx.http_port, ip=bind),
            docker.ContainerPortArgs(internal=443, external=cfg.nginx.https_port, ip=bind),
        ]
        if loopback_api:
            ports.append(loopback_port(API_LOOPBACK_LISTEN, loopback_api))
        health_url = "https://127.0.0.1/health"
        self.container = service_container(
            "nginx",
            ServiceSpec(
                service="nginx",
                image=image,
                limits=cfg.resources.nginx,
                container_name=cfg.container_name("nginx"),
                delete_before_replace=True,  # fixed host ports 80/443 (pulumi-docker #1356)
                envs=[f"TZ={cfg.timezone}"],
                uploads=uploads,
                volumes=volumes,
                ports=ports,
                health=Health(
                    test=["CMD-SHELL", f"curl -fsSk {health_url} >/dev/null || wget -q --no-check-certificate -O /dev/null {health_url}"]
                ),
            ),
            site,
            parent=self,
            depends_on=[upstreams, maintenance, *tls_material.ready],
        )
        self.verified = shell.run(
            "verify-deploy",
            verify_script(cfg, shell.docker_cli),
            parent=self,
            triggers=[self.upstreams_conf, self.container.id],
            depends_on=[upstreams, self.container],
        )
        self.register_outputs({"container": self.container.name, "upstreams": self.upstreams_conf})
