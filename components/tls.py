"""TLS for nginx (R13): self-signed for dev/test, Let's Encrypt on the server, or the
operator's own certificate.

Self-signed and provided certificates are put into the nginx container (their key is a
secret in state). Let's Encrypt certificates live on the server under <install_dir>/ssl,
written by certbot and its deploy hook, and nginx mounts that directory.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from config.model import TlsConfig
from render.certbot import (
    CertbotSettings,
    render_certbot_cron,
    render_certbot_deploy_hook,
    render_certbot_issue_script,
)

from .target import HostShell, install_files_script, sha256



@dataclass
class TlsMaterial:
    """What nginx needs: either PEM contents to upload, or a host directory to mount."""

    certificate_pem: pulumi.Output[str] | None
    private_key_pem: pulumi.Output[str] | None
    host_dir: str | None
    acme_webroot: str | None
    ready: list[pulumi.Resource]  # nginx starts only after these (the certificate exists)


@dataclass(frozen=True)
class TlsArgs:
    tls: TlsConfig
    domains: tuple[str, ...]
    certbot: CertbotSettings | None  # letsencrypt only


class Tls(pulumi.ComponentResource):
    material: TlsMaterial

    def __init__(
        self,
        name: str,
        args: TlsArgs,
        shell: HostShell,
        bootstrap_done: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:tls:Tls", name, None, opts)
        cfg_tls, domains = args.tls, list(args.domains)
        mode = cfg_tls.mode
        if mode == "self-signed":
            key = tls.PrivateKey(
                "tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=pulumi.ResourceOptions(parent=self)
            )
            cert = tls.SelfSignedCert(
                "tls-cert",
                private_key_pem=key.private_key_pem,
                subject=tls.SelfSignedCertSubjectArgs(common_name=domains[0], organization="AI Meeting"),
                dns_names=domains,
                ip_addresses=["127.0.0.1"] if "localhost" in domains else [],
                validity_period_hours=cfg_tls.self_signed_validity_hours,
                early_renewal_hours=720,  # a later `up` within 30 days of expiry issues a new one
                allowed_uses=["key_encipherment", "digital_signature", "server_auth"],
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.material = TlsMaterial(
                certificate_pem=cert.cert_pem,
                private_key_pem=pulumi.Output.secret(key.private_key_pem),
                host_dir=None,
                acme_webroot=None,
                ready=[cert],
            )
        elif mode == "provided":
            assert cfg_tls.certificate and cfg_tls.private_key  # validated by the model
            self.material = TlsMaterial(
                certificate_pem=pulumi.Output.from_input(cfg_tls.certificate.get_secret_value()),
                private_key_pem=pulumi.Output.secret(cfg_tls.private_key.get_secret_value()),
                host_dir=None,
                acme_webroot=None,
                ready=[],
            )
        else:
            settings = args.certbot
            assert settings is not None  # the assembly renders it for letsencrypt
            files = {
                settings.issue_script_path: render_certbot_issue_script(settings),
                settings.deploy_hook_path: render_certbot_deploy_hook(settings),
            }
            install = install_files_script(files, cron_name="ai-meeting-certbot", cron=render_certbot_cron(settings))
            ca_env = f"REQUESTS_CA_BUNDLE={cfg_tls.acme_ca_bundle} " if cfg_tls.acme_ca_bundle else ""
            # Issue before nginx exists (certbot --standalone on :80); later runs only re-copy.
            issue = shell.run(
                "certbot-issue",
                f"{install}\nsudo {ca_env}{settings.issue_script_path}",
                parent=self,
                triggers=[sha256(install), ",".join(domains), cfg_tls.acme_server or ""],
                depends_on=bootstrap_done,
            )
            self.material = TlsMaterial(
                certificate_pem=None,
                private_key_pem=None,
                host_dir=f"{settings.install_dir}/ssl",
                acme_webroot=settings.webroot,
                ready=[issue],
            )
        self.register_outputs({"mode": mode})


@dataclass(frozen=True)
class EdgeCertificatesArgs:
    certbot: CertbotSettings  # with nginx_service and challenge="webroot" (assembly)
    acme_ca_bundle: str | None


class EdgeCertificates(pulumi.ComponentResource):
    """Let's Encrypt on a swarm: every edge node holds its own certificate for the domains.

    No private key ever leaves the node it was made on, and no node depends on another for its
    renewals. Before nginx first starts, each edge node gets a placeholder (self-signed, only
    when it has no certificate yet); once nginx runs, each node's certbot asks for its
    certificate by webroot, and whichever edge node the CA reaches answers: a challenge that is
    not in its own webroot is fetched from the other edge nginx tasks (render/nginx.py
    acme_peers). Renewals are each node's cron job; the deploy hook reloads that node's nginx
    task. Let's Encrypt allows 5 certificates a week for the same names: keep to 5 edge nodes.
    """

    material: TlsMaterial

    def __init__(
        self,
        name: str,
        args: EdgeCertificatesArgs,
        edge_nodes: list[tuple[str, HostShell]],
        bootstrap_done: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:tls:EdgeCertificates", name, None, opts)
        s = args.certbot
        self._args, self._edge_nodes = args, edge_nodes
        files = {s.issue_script_path: render_certbot_issue_script(s), s.deploy_hook_path: render_certbot_deploy_hook(s)}
        self._install = install_files_script(files, cron_name="ai-meeting-certbot", cron=render_certbot_cron(s))
        placeholders = [
            shell.run(
                f"certbot-placeholder-{key}",
                f"{self._install}\nsudo {s.issue_script_path} --placeholder",
                parent=self,
                triggers=[sha256(self._install)],
                # The renewal job goes with the stack; the certificates stay (re-issuing them is
                # rate-limited), as on one server.
                delete="sudo rm -f /etc/cron.d/ai-meeting-certbot",
                depends_on=bootstrap_done,
            )
            for key, shell in edge_nodes
        ]
        self.material = TlsMaterial(
            certificate_pem=None, private_key_pem=None, host_dir=f"{s.install_dir}/ssl", acme_webroot=s.webroot,
            ready=placeholders,
        )
        self.register_outputs({})

    def issue(self, nginx_serving: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """Each edge node's certificate, once nginx answers challenges on every edge node."""
        s = self._args.certbot
        ca_env = f"REQUESTS_CA_BUNDLE={self._args.acme_ca_bundle} " if self._args.acme_ca_bundle else ""
        return [
            shell.run(
                f"certbot-issue-{key}",
                f"sudo {ca_env}{s.issue_script_path}",
                parent=self,
                triggers=[sha256(self._install), ",".join(s.domains), s.acme_server or ""],
                depends_on=nginx_serving,
            )
            for key, shell in self._edge_nodes
        ]
