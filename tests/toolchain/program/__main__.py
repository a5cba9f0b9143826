"""Smoke-test program: one resource of each provider the project uses.

Config (set by tests/toolchain/test_toolchain_smoke.py):
  suffix       unique suffix for Docker object names
  image        a locally available image (no pulls are possible here)
  sshHost, sshPort, sshUser, sshKeyFile   the test's own OpenSSH server
"""

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_random as random
import pulumi_tls as tls

cfg = pulumi.Config()
suffix = cfg.require("suffix")
image = cfg.require("image")

password = random.RandomPassword("password", length=24, special=False)

key = tls.PrivateKey("key", algorithm="ECDSA", ecdsa_curve="P256")
cert = tls.SelfSignedCert(
    "cert",
    private_key_pem=key.private_key_pem,
    subject=tls.SelfSignedCertSubjectArgs(common_name="smoke.invalid"),
    validity_period_hours=24,
    allowed_uses=["digital_signature", "server_auth"],
)

local = command.local.Command("local", create="echo local-ok")

with open(cfg.require("sshKeyFile"), encoding="utf-8") as f:
    ssh_key = pulumi.Output.secret(f.read())
remote = command.remote.Command(
    "remote",
    connection=command.remote.ConnectionArgs(
        host=cfg.require("sshHost"),
        port=cfg.require_int("sshPort"),
        user=cfg.require("sshUser"),
        private_key=ssh_key,
    ),
    create="echo remote-ok",
)

# Explicit provider: never the ambient DOCKER_HOST.
engine = docker.Provider("engine", host="unix:///var/run/docker.sock")
opts = pulumi.ResourceOptions(provider=engine)
network = docker.Network("network", name=f"toolchain-smoke-{suffix}", opts=opts)
container = docker.Container(
    "container",
    name=f"toolchain-smoke-{suffix}",
    image=image,
    command=["sleep", "3600"],
    networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name)],
    must_run=True,
    opts=opts,
)

pulumi.export("passwordLength", password.result.apply(len))
pulumi.export("certPemHead", cert.cert_pem.apply(lambda pem: pem.splitlines()[0]))
pulumi.export("localStdout", local.stdout)
pulumi.export("remoteStdout", remote.stdout)
pulumi.export("networkName", network.name)
pulumi.export("containerName", container.name)
