"""nginx (R12, R13, R20): the only container that listens beyond 127.0.0.1.

Its config is rendered from the stack config (render/nginx.py) and put into the container;
it is reloaded, not restarted, when API replicas or the web container are replaced, since
nginx resolves upstream names only when it (re)loads its config.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from config.model import StackConfig
from render.nginx import NginxSite, render_nginx_conf

from .service import DockerSite, Health, ServiceSpec, service_container, upload
from .target import HostShell
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


def reload_script(cfg: StackConfig, docker_cli: str) -> str:
    """A graceful reload: nginx re-resolves upstream names, old workers finish their requests.
    Does nothing when nginx isn't running (first deploy, destroy)."""
    nginx = cfg.container_name("nginx")
    return (
        "set -euo pipefail\n"
        f"if [ \"$({docker_cli} inspect -f '{{{{.State.Running}}}}' {nginx} 2>/dev/null)\" = true ]; then\n"
        f"  {docker_cli} exec {nginx} nginx -s reload\n"
        "fi"
    )


def reload_after_delete_hook(cfg: StackConfig, shell: HostShell) -> pulumi.ResourceHook:
    """Pulumi deletes replaced API containers at the end of an update, after every command
    ran; nginx would keep their stale addresses. This hook reloads it once they are gone."""
    script = reload_script(cfg, shell.docker_cli)

    def reload(args: pulumi.ResourceHookArgs) -> None:
        result = shell.run_now(script)
        if result.returncode != 0:
            pulumi.log.warn(f"nginx reload after removing {args.name} failed: {result.stderr.strip()[-300:]}")

    return pulumi.ResourceHook(f"{cfg.name_prefix}-reload-nginx", reload, pulumi.ResourceHookOptions(ignore_errors=True))


class Proxy(pulumi.ComponentResource):
    container: docker.Container
    conf: str

    def __init__(
        self,
        name: str,
        *,
        site: DockerSite,
        image: pulumi.Input[str],
        tls_material: TlsMaterial,
        api_replicas: list[docker.Container],
        api_upstreams: list[str],
        web: docker.Container,
        web_upstream: str,
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:proxy:Proxy", name, None, opts)
        cfg = site.cfg
        self.conf = render_nginx_conf(nginx_site(cfg, api_upstreams, web_upstream, tls_material.acme_webroot))
        uploads = [upload("/etc/nginx/nginx.conf", self.conf)]
        volumes: list[docker.ContainerVolumeArgs] = []
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
                ports=[
                    docker.ContainerPortArgs(internal=80, external=cfg.nginx.http_port, ip=bind),
                    docker.ContainerPortArgs(internal=443, external=cfg.nginx.https_port, ip=bind),
                ],
                health=Health(
                    test=["CMD-SHELL", f"curl -fsSk {health_url} >/dev/null || wget -q --no-check-certificate -O /dev/null {health_url}"]
                ),
            ),
            site,
            parent=self,
            depends_on=[*depends_on, *api_replicas, web, *tls_material.ready],
        )
        reload = shell.run(
            "nginx-reload",
            reload_script(cfg, shell.docker_cli),
            parent=self,
            # Replaced replicas get new addresses; a reload re-resolves them without dropping requests.
            triggers=[*[c.id for c in api_replicas], web.id, self.container.id],
            depends_on=[self.container],
        )
        self.verified = shell.run(
            "verify-deploy",
            verify_script(cfg, shell.docker_cli),
            parent=self,
            triggers=[*[c.id for c in api_replicas], web.id, self.container.id],
            depends_on=[reload],
        )
        self.register_outputs({"container": self.container.name})
