"""nginx on one server (R12, R13, R20): the only container that listens beyond 127.0.0.1.

Its config is rendered from the stack config (render/nginx.py) and put into the container.
The upstreams (API replicas and web, by container name) live in a separate file on a volume:
a rollout or a scale change rewrites that file and reloads nginx, never restarting it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from config.model import Limits, NginxHardening, ServiceHardening
from render.nginx import (
    Maintenance,
    NginxSite,
    maintenance_files,
    nginx_files_switch_script,
    render_nginx_conf,
    render_nginx_upstreams,
)

from . import catalogue, on_server
from .definition import DataVolume
from .on_server import ServerSite
from .target import HostShell, sha256
from .tls import TlsMaterial


UPSTREAMS_DIR = "/etc/nginx/upstreams"
UPSTREAMS_FILE = f"{UPSTREAMS_DIR}/upstreams.conf"
MAINTENANCE_FILE = f"{UPSTREAMS_DIR}/maintenance.conf"  # + maintenance.html, switched like the upstreams
API_LOOPBACK_LISTEN = 8081  # inside the nginx container; published on 127.0.0.1:loopback_ports.api


def upstreams_script(docker_cli: str, nginx: str, volume: str, helper_image: str, conf: str) -> str:
    """Switch nginx to the current replicas without restarting it: the upstream file written
    into the volume nginx reads it from (a helper container, so it works before nginx exists),
    then, if nginx runs, `nginx -t`, a graceful reload and a wait (<= 10 s) for the old workers;
    a file nginx refuses is rolled back (render.nginx.nginx_files_switch_script). Pulumi removes
    replaced containers only after this, so no request goes to a container that is gone."""
    return nginx_files_switch_script(docker_cli, nginx, volume, helper_image, {"upstreams.conf": conf}, "the current upstreams")


def seed_script(docker_cli: str, volume: str, helper_image: str, conf: str) -> str:
    """Before the first nginx starts: an upstream file if there is none yet, pointing nowhere
    (502 until the replicas exist), so nginx starts beside the data services instead of after
    the API; the real upstreams follow by a reload (upstreams_script). Never overwrites."""
    return f"""set -euo pipefail
{docker_cli} run --rm -i --network none --user 0 --entrypoint sh -v {volume}:/u {helper_image} \\
  -c '[ -f /u/upstreams.conf ] || cat > /u/upstreams.conf' <<'AI_MEETING_EOF'
{conf.rstrip()}
AI_MEETING_EOF"""


@dataclass(frozen=True)
class ProxyArgs:
    image: pulumi.Input[str]
    limits: Limits
    timezone: str
    site: NginxSite  # server names, ports, limits; upstreams are filled in here
    http_port: int
    https_port: int
    tls: TlsMaterial
    maintenance: Maintenance = Maintenance()
    loopback_api_port: int | None = None  # 127.0.0.1:<port> -> the API replicas, plain HTTP
    log_dir: str | None = None  # servers: <install_dir>/logs/nginx
    hardening: ServiceHardening = NginxHardening()


class Proxy(pulumi.ComponentResource):
    container: docker.Container
    conf: str
    upstreams_conf: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        args: ProxyArgs,
        site: ServerSite,
        api_replicas: list[docker.Container],
        api_port: int,
        web: list[docker.Container],
        web_port: int,
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:proxy:Proxy", name, None, opts)
        tls_material = args.tls
        acme = "/var/www/acme" if tls_material.acme_webroot else None
        base = dataclasses.replace(args.site, acme_webroot=acme)
        # nginx.conf itself does not name the replicas: scaling or a rollout only rewrites the
        # included upstream file and reloads (no nginx restart, no dropped connection).
        self.conf = render_nginx_conf(
            dataclasses.replace(
                base,
                upstreams_include=UPSTREAMS_FILE,
                maintenance_include=MAINTENANCE_FILE,
                listen_api_loopback=API_LOOPBACK_LISTEN if args.loopback_api_port else None,
            )
        )
        self.upstreams_conf = pulumi.Output.all(pulumi.Output.all(*[c.name for c in web]), *[c.name for c in api_replicas]).apply(
            lambda names: render_nginx_upstreams(
                dataclasses.replace(base, api_upstreams=tuple(f"{n}:{api_port}" for n in names[1:]),
                                    web_upstream=f"{names[0][0]}:{web_port}")
            )
        )
        upstreams_volume = docker.Volume(
            "nginx-upstreams",
            name=f"{site.name_prefix}-nginx-upstreams",
            labels=[docker.VolumeLabelArgs(label="ai-meeting.stack", value=pulumi.get_stack())],
            opts=pulumi.ResourceOptions(parent=self, provider=site.provider),
        )
        nginx_name = f"{site.name_prefix}-nginx"
        nowhere = render_nginx_upstreams(dataclasses.replace(base, api_upstreams=("127.0.0.1:1",), web_upstream="127.0.0.1:1"))
        seeded = shell.run(
            "nginx-upstreams-seed",
            pulumi.Output.all(upstreams_volume.name, args.image).apply(
                lambda v: seed_script(shell.docker_cli, v[0], v[1], nowhere)
            ),
            parent=self,
            triggers=[upstreams_volume.name],
        )
        # Maintenance mode (README): its included files switched by a reload, nothing restarted.
        files = maintenance_files(args.maintenance)
        maintenance = shell.run(
            "nginx-maintenance-reload",
            pulumi.Output.all(upstreams_volume.name, args.image).apply(
                lambda v: nginx_files_switch_script(shell.docker_cli, nginx_name, v[0], v[1], files, "maintenance mode")
            ),
            parent=self,
            triggers=[sha256(files["maintenance.conf"] + files["maintenance.html"])],
            depends_on=[seeded],
        )
        definition = catalogue.nginx(
            catalogue.NginxArgs(
                image=args.image, limits=args.limits, timezone=args.timezone, conf=self.conf,
                http_port=args.http_port, https_port=args.https_port,
                certificate_pem=tls_material.certificate_pem, private_key_pem=tls_material.private_key_pem,
                cert_dir=tls_material.host_dir, acme_webroot=tls_material.acme_webroot, log_dir=args.log_dir,
                loopback_ports=[(API_LOOPBACK_LISTEN, args.loopback_api_port)] if args.loopback_api_port else [],
                hardening=args.hardening,
            )
        )
        # The upstream file lives on a volume that only nginx on one server has.
        site_with_upstreams = dataclasses.replace(site, volumes={**site.volumes, "nginx-upstreams": upstreams_volume.name})
        definition = dataclasses.replace(definition, volumes=[DataVolume("nginx-upstreams", UPSTREAMS_DIR, read_only=True)])
        (self.container,) = on_server.containers(
            definition, site_with_upstreams, parent=self, depends_on=[seeded, maintenance, *tls_material.ready]
        )
        upstreams = shell.run(
            "nginx-upstreams-reload",
            pulumi.Output.all(upstreams_volume.name, args.image, self.upstreams_conf).apply(
                lambda v: upstreams_script(shell.docker_cli, nginx_name, v[0], v[1], v[2])
            ),
            parent=self,
            triggers=[self.upstreams_conf],
            depends_on=[*depends_on, *api_replicas, *web, self.container],
        )
        self.verified = shell.run(
            "verify-deploy",
            catalogue.verify_script(args.site.server_names[0], args.https_port,
                                    diagnose=f"{shell.docker_cli} logs --tail 20 {nginx_name}"),
            parent=self,
            triggers=[self.upstreams_conf, self.container.id],
            depends_on=[upstreams, self.container],
        )
        self.register_outputs({"container": self.container.name, "upstreams": self.upstreams_conf})
