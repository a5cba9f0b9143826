"""Run the stack under Pulumi mocks and record every resource it declares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pulumi

from config import StackConfig, validate_config

FAKE_PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the engine marks a secret value on the wire


def unwrap(value: Any, path: str, secret_paths: set[str]) -> Any:
    """Strip secret wrappers from mock inputs, remembering which input paths were secret."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            secret_paths.add(path)
            return unwrap(value["value"], path, secret_paths)
        return {k: unwrap(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    return value


@dataclass
class Declared:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None
    secret_inputs: set[str] = field(default_factory=set)


@dataclass
class Recorder(pulumi.runtime.Mocks):
    resources: list[Declared] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = unwrap(dict(args.inputs), "", set())
        t = args.typ
        if t == "random:index/randomPassword:RandomPassword":
            outputs["result"] = ("Ab1" * 30)[: int(outputs.get("length", 40))]
        elif t == "random:index/randomBytes:RandomBytes":
            outputs["base64"] = "b" * 88
        elif t == "docker:index/remoteImage:RemoteImage":
            outputs["image_id"] = f"sha256:{args.inputs['name']}"
            outputs["imageId"] = outputs["image_id"]
        elif t == "tls:index/privateKey:PrivateKey":
            outputs["private_key_pem"] = "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n"
            outputs["privateKeyPem"] = outputs["private_key_pem"]
        elif t == "tls:index/selfSignedCert:SelfSignedCert":
            outputs["cert_pem"] = "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n"
            outputs["certPem"] = outputs["cert_pem"]
        elif t.startswith("command:"):
            if args.name.endswith(("swarm-init", "swarm-join")):  # target.kind swarm: a node id
                outputs["stdout"] = "n0de1d" + args.name.split("-swarm-")[0].replace(".", "").replace("-", "")[-14:].lower()
            elif args.name == "swarm-join-tokens":
                outputs["stdout"] = "SWMTKN-1-worker\nSWMTKN-1-manager\n"
            outputs.setdefault("stdout", "")
            outputs.setdefault("stderr", "")
        elif t == "docker:index/container:Container":
            outputs.setdefault("name", outputs.get("name") or f"{args.name}-1a2b3c4")
        secret_paths: set[str] = set()
        inputs = unwrap(dict(args.inputs), "", secret_paths)
        self.resources.append(Declared(t, args.name, inputs, args.provider, secret_paths))
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, suffix: str) -> list[Declared]:
        return [r for r in self.resources if r.typ.endswith(suffix)]

    def named(self, name: str) -> Declared:
        matches = [r for r in self.resources if r.name == name and not r.typ.startswith("ai-meeting:")]
        assert len(matches) == 1, f"expected one resource named {name}, got {len(matches)}"
        return matches[0]

    def containers(self) -> list[Declared]:
        """The services' containers (not the never-started carriers of their files)."""
        return [c for c in self.of_type("container:Container") if _kind(c) != "files"]

    def file_carriers(self) -> list[Declared]:
        return [c for c in self.of_type("container:Container") if _kind(c) == "files"]

    def uploads_of(self, container: Declared) -> list[dict]:
        """The files a service's container gets: its own uploads, or its carrier's."""
        own = list(container.inputs.get("uploads") or [])
        for v in container.inputs.get("volumes") or []:
            if v.get("fromContainer"):
                carrier_id = v["fromContainer"].removesuffix(":ro")
                carrier = next(c for c in self.file_carriers() if f"{c.name}-id" == carrier_id)
                own += [u for u in carrier.inputs.get("uploads") or [] if not u["file"].endswith("/.mountpoint")]
        return own


def _kind(c: Declared) -> str | None:
    return next((l["value"] for l in c.inputs.get("labels") or [] if l["label"] == "ai-meeting.kind"), None)


def config(environment: str = "dev", **overrides: Any) -> StackConfig:
    raw: dict[str, Any] = {"environment": environment}
    if environment == "prod":
        raw.update(
            target={"kind": "ssh", "host": "203.0.113.10", "user": "deploy", "private_key": FAKE_PEM},
            domains=["ai-meeting.com", "www.ai-meeting.com"],
            tls={"mode": "letsencrypt", "email": "ops@ai-meeting.com"},
            api={"replicas": 3},
        )
    raw.update(overrides)
    return validate_config(raw, environment)


@dataclass
class Deployed:
    recorder: Recorder
    outputs: dict[str, Any]  # resolved values
    secret_outputs: set[str]  # names of outputs that are secrets


def _no_previous_releases() -> None:
    return None


# The server's machine id under mocks (components/target.py server_identity): no server to log in to.
MOCK_MACHINE_ID = "0123456789abcdef0123456789abcdef"


def mock_server_identity(shell) -> str:
    return MOCK_MACHINE_ID if shell.connection else ""


def deploy(cfg: StackConfig, stack: str | None = None, tmp_cache: str | None = None) -> Deployed:
    """Declare the whole stack under mocks; return what was declared and the resolved outputs."""
    from components.stack import AiMeetingStack

    rec = Recorder()
    # No stack to read earlier releases from under mocks (a test may patch previous_releases).
    import components.releases as releases

    original = releases.previous_releases
    if not getattr(original, "patched", False):
        releases.previous_releases = _no_previous_releases
    # No server to log in to under mocks either (the machine id: components/target.py).
    import components.stack as stack_module

    original_identity = stack_module.server_identity
    stack_module.server_identity = mock_server_identity
    pulumi.runtime.set_mocks(rec, project="ai-meeting", stack=stack or cfg.environment, preview=False)
    result: dict[str, Any] = {}
    secrets: set[str] = set()

    async def resolve(stack_obj: AiMeetingStack) -> None:
        for key, value in stack_obj.outputs.items():
            out = pulumi.Output.from_input(value)
            result[key] = await out.future()
            if await out.is_secret():
                secrets.add(key)

    @pulumi.runtime.test
    def run():
        if cfg.target.kind == "swarm":
            from components.swarm_stack import SwarmStack

            s = SwarmStack("ai-meeting", cfg)
        else:
            s = AiMeetingStack("ai-meeting", cfg)
        return pulumi.Output.from_input(asyncio.ensure_future(resolve(s))).apply(lambda _: None)

    try:
        run()
    finally:
        releases.previous_releases = original
        stack_module.server_identity = original_identity
    return Deployed(rec, result, secrets)
