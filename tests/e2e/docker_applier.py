"""Apply the stack's declarations to a real Docker engine, without the Pulumi engine.

The Pulumi engine cannot run here yet: the Python language host and the provider plugins
are not served by the Go module mirror (issue 3, docs/toolchain.md). Until they are, this
checks that what the program *declares* really works. The program runs under Pulumi's mock
monitor exactly as it would under the engine (same components, same rendered files, same
dependency order: a resource registers only after its inputs and `depends_on` resolved);
each registration is applied at once with the Docker CLI, local shell or SSH, and the real
results (container names, image ids, generated secrets) flow back into the program.

It is deliberately small: no diffs, no state, no update semantics. What needs the engine
(no-op second preview, replacements, destroy from state) is tested in test_dev_stack.py,
which runs when the toolchain is complete.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import string
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from tests.unit.harness import unwrap


class ApplyError(RuntimeError):
    pass


def _run_both(argv: list[str], *, stdin: str | None = None, timeout: int = 300) -> tuple[str, str]:
    """Run; return (stdout, stderr) like pulumi-command does, or raise with both."""
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        shown = " ".join(shlex.quote(a) for a in argv[:6])
        raise ApplyError(f"{shown} … exited {proc.returncode}: {proc.stderr.strip()[-1500:]} {proc.stdout.strip()[-500:]}")
    return proc.stdout, proc.stderr


def _run(argv: list[str], *, stdin: str | None = None, timeout: int = 300) -> str:
    return _run_both(argv, stdin=stdin, timeout=timeout)[0]


@dataclass
class Ssh:
    host: str
    port: int
    user: str
    key_file: str

    def argv(self, command: str) -> list[str]:
        return [
            "ssh", "-i", self.key_file, "-p", str(self.port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            f"{self.user}@{self.host}", command,
        ]


@dataclass
class DockerApplier(pulumi.runtime.Mocks):
    """Mocks whose `new_resource` creates the resource for real."""

    workdir: Path
    docker_host: str = "unix:///var/run/docker.sock"
    ssh: Ssh | None = None
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, docker name/id) in creation order
    log: list[str] = field(default_factory=list)

    # --- plumbing ------------------------------------------------------------------------

    def docker(self, *args: str, stdin: str | None = None, timeout: int = 300) -> str:
        return _run(["docker", "-H", self.docker_host, *args], stdin=stdin, timeout=timeout)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = unwrap(dict(args.inputs), "", set())
        handler = {
            "pulumi:providers:docker": self._provider,
            "docker:index/network:Network": self._network,
            "docker:index/volume:Volume": self._volume,
            "docker:index/remoteImage:RemoteImage": self._image,
            "docker:index/container:Container": self._container,
            "command:local:Command": self._local_command,
            "command:remote:Command": self._remote_command,
            "random:index/randomPassword:RandomPassword": self._password,
            "random:index/randomBytes:RandomBytes": self._bytes,
            "tls:index/privateKey:PrivateKey": self._private_key,
            "tls:index/selfSignedCert:SelfSignedCert": self._self_signed,
        }.get(args.typ)
        if handler is None:
            return [f"{args.name}-id", inputs]
        started = time.monotonic()
        rid, outputs = handler(args.name, inputs)
        self.log.append(f"{args.typ.split(':')[-1]:<16} {args.name:<28} {time.monotonic() - started:6.1f}s")
        return [rid, {**inputs, **outputs}]

    # --- providers, network, volumes, images -------------------------------------------------

    def _provider(self, name: str, inputs: dict) -> tuple[str, dict]:
        host = inputs.get("host", "")
        if host.startswith("ssh://"):
            # Reach the server's engine through an SSH-forwarded socket (what `ssh://` does).
            assert self.ssh, "an ssh target needs DockerApplier(ssh=...)"
            sock = self.workdir / "remote-docker.sock"
            sock.unlink(missing_ok=True)
            forward = self.ssh.argv("sleep 86400")
            forward[1:1] = ["-N", "-L", f"{sock}:/var/run/docker.sock"]
            forward.remove("sleep 86400")
            self.tunnel = subprocess.Popen(forward, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.1)
            self.docker_host = f"unix://{sock}"
        elif host:
            self.docker_host = host
        return "provider", {}

    def _network(self, name: str, inputs: dict) -> tuple[str, dict]:
        labels = [f"--label={l['label']}={l['value']}" for l in inputs.get("labels", [])]
        nid = self.docker("network", "create", "--driver", inputs.get("driver", "bridge"), *labels, inputs["name"]).strip()
        self.created.append(("network", inputs["name"]))
        return nid, {"name": inputs["name"]}

    def _volume(self, name: str, inputs: dict) -> tuple[str, dict]:
        argv = ["volume", "create", "--driver", inputs.get("driver", "local")]
        for k, v in (inputs.get("driverOpts") or {}).items():
            argv += ["--opt", f"{k}={v}"]
        argv += [f"--label={l['label']}={l['value']}" for l in inputs.get("labels", [])]
        self.docker(*argv, inputs["name"])
        self.created.append(("volume", inputs["name"]))
        return inputs["name"], {"name": inputs["name"]}

    def _image(self, name: str, inputs: dict) -> tuple[str, dict]:
        ref = inputs["name"]
        try:
            image_id = self.docker("image", "inspect", "-f", "{{.Id}}", ref).strip()
        except ApplyError:
            raise ApplyError(f"image {ref} is not on the engine (run scripts/build-local-images)") from None
        return image_id, {"imageId": image_id, "image_id": image_id, "repoDigest": ""}

    # --- containers ----------------------------------------------------------------------

    def _container(self, name: str, inputs: dict) -> tuple[str, dict]:
        cname = inputs.get("name") or f"{name}-{secrets.token_hex(4)[:7]}"
        argv = ["create", "--name", cname]
        if inputs.get("restart"):
            argv += ["--restart", inputs["restart"]]
        if inputs.get("memory"):
            argv += ["--memory", f"{int(inputs['memory'])}m"]
        if inputs.get("memorySwap"):
            argv += ["--memory-swap", f"{int(inputs['memorySwap'])}m"]
        if inputs.get("cpus"):
            argv += ["--cpus", inputs["cpus"]]
        if inputs.get("user"):
            argv += ["--user", inputs["user"]]
        if inputs.get("logDriver"):
            argv += ["--log-driver", inputs["logDriver"]]
        for k, v in (inputs.get("logOpts") or {}).items():
            argv += ["--log-opt", f"{k}={v}"]
        for label in inputs.get("labels", []):
            argv.append(f"--label={label['label']}={label['value']}")
        nets = inputs.get("networksAdvanced") or []
        if nets:
            argv += ["--network", nets[0]["name"]]
            for alias in nets[0].get("aliases", []):
                argv += ["--network-alias", alias]
        for p in inputs.get("ports", []):
            argv += ["-p", f"{p.get('ip', '0.0.0.0')}:{int(p['external'])}:{int(p['internal'])}"]
        for v in inputs.get("volumes", []):
            source = v.get("volumeName") or v.get("hostPath")
            argv += ["-v", f"{source}:{v['containerPath']}" + (":ro" if v.get("readOnly") else "")]
        hc = inputs.get("healthcheck")
        if hc:
            tests = hc["tests"]
            cmd = tests[1] if tests[0] == "CMD-SHELL" else shlex.join(tests[1:])
            argv += ["--health-cmd", cmd, "--health-interval", hc.get("interval", "10s"),
                     "--health-timeout", hc.get("timeout", "5s"), "--health-retries", str(int(hc.get("retries", 3))),
                     "--health-start-period", hc.get("startPeriod", "0s")]
        env_file = None
        if inputs.get("envs"):
            # Secrets go through a 0600 file, never the command line.
            fd, env_file = tempfile.mkstemp(dir=self.workdir, prefix="env-")
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(inputs["envs"]) + "\n")
            argv += ["--env-file", env_file]
        argv.append(inputs["image"])
        argv += list(inputs.get("command") or [])
        try:
            cid = self.docker(*argv).strip()
        finally:
            if env_file:
                os.unlink(env_file)
        self.created.append(("container", cname))
        for up in inputs.get("uploads", []):
            self._upload(cname, up)
        self.docker("start", cname)
        if inputs.get("wait"):
            self._wait_healthy(cname, int(inputs.get("waitTimeout", 60)))
        return cid, {"name": cname, "image": inputs["image"]}

    def _upload(self, container: str, up: dict) -> None:
        """Like the provider's uploads: a tar with the file and its mode, copied in before start."""
        import io
        import tarfile

        data = up["content"].encode()
        info = tarfile.TarInfo(up["file"].lstrip("/"))
        info.size = len(data)
        info.mode = int(up.get("permissions", "0644"), 8)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.addfile(info, io.BytesIO(data))
        proc = subprocess.run(["docker", "-H", self.docker_host, "cp", "-", f"{container}:/"], input=buf.getvalue(), capture_output=True)
        if proc.returncode != 0:
            raise ApplyError(f"upload of {up['file']} into {container} failed: {proc.stderr.decode()[-500:]}")

    def _wait_healthy(self, container: str, timeout: int) -> None:
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            state = json.loads(self.docker("inspect", "-f", "{{json .State}}", container))
            status = (state.get("Health") or {}).get("Status", "none")
            if status == "healthy":
                return
            if not state.get("Running") and state.get("Status") == "exited":
                break
            time.sleep(1)
        logs = subprocess.run(["docker", "-H", self.docker_host, "logs", "--tail", "30", container], capture_output=True, text=True)
        raise ApplyError(f"container {container} not healthy after {timeout}s (status {status}):\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")

    # --- commands ------------------------------------------------------------------------

    def _local_command(self, name: str, inputs: dict) -> tuple[str, dict]:
        interpreter = inputs.get("interpreter") or ["/bin/sh", "-c"]
        out, err = _run_both([*interpreter, inputs["create"]], stdin=inputs.get("stdin"), timeout=600)
        return f"{name}-{secrets.token_hex(4)}", {"stdout": out, "stderr": err}

    def _remote_command(self, name: str, inputs: dict) -> tuple[str, dict]:
        assert self.ssh, "remote commands need DockerApplier(ssh=...)"
        out, err = _run_both(self.ssh.argv(inputs["create"]), stdin=inputs.get("stdin"), timeout=1200)
        return f"{name}-{secrets.token_hex(4)}", {"stdout": out, "stderr": err}

    # --- random and tls ---------------------------------------------------------------------

    def _password(self, name: str, inputs: dict) -> tuple[str, dict]:
        length = int(inputs.get("length", 16))
        alphabet = string.ascii_letters + string.digits + ("" if inputs.get("special") is False else "!#$%&*()-_=+")
        while True:
            value = "".join(secrets.choice(alphabet) for _ in range(length))
            if (sum(c.islower() for c in value) >= int(inputs.get("minLower", 0))
                    and sum(c.isupper() for c in value) >= int(inputs.get("minUpper", 0))
                    and sum(c.isdigit() for c in value) >= int(inputs.get("minNumeric", 0))):
                return "none", {"result": value}

    def _bytes(self, name: str, inputs: dict) -> tuple[str, dict]:
        raw = secrets.token_bytes(int(inputs["length"]))
        return "none", {"base64": base64.b64encode(raw).decode(), "hex": raw.hex()}

    def _private_key(self, name: str, inputs: dict) -> tuple[str, dict]:
        pem = _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"])
        pkcs8 = _run(["openssl", "pkcs8", "-topk8", "-nocrypt"], stdin=pem)
        return name, {"privateKeyPem": pkcs8, "private_key_pem": pkcs8}

    def _self_signed(self, name: str, inputs: dict) -> tuple[str, dict]:
        key = self.workdir / f"{name}.key"
        key.write_text(inputs["privateKeyPem"])
        key.chmod(0o600)
        sans = [f"DNS:{d}" for d in inputs.get("dnsNames", [])] + [f"IP:{i}" for i in inputs.get("ipAddresses", [])]
        days = max(1, int(inputs.get("validityPeriodHours", 24)) // 24)
        cn = inputs.get("subject", {}).get("commonName", "localhost")
        cert = _run(["openssl", "req", "-x509", "-new", "-key", str(key), "-days", str(days), "-subj", f"/CN={cn}",
                     "-addext", f"subjectAltName={','.join(sans)}"])
        key.unlink()
        return name, {"certPem": cert, "cert_pem": cert}

    # --- teardown ------------------------------------------------------------------------

    def destroy(self) -> None:
        """Remove what was created, newest first (containers, then network and volumes)."""
        for kind, ident in reversed(self.created):
            args = {"container": ["rm", "-f", "-v"], "network": ["network", "rm"], "volume": ["volume", "rm", "-f"]}[kind]
            subprocess.run(["docker", "-H", self.docker_host, *args, ident], capture_output=True)
        self.created.clear()
        tunnel = getattr(self, "tunnel", None)
        if tunnel:
            tunnel.terminate()


def apply_stack(cfg, applier: DockerApplier, stack: str) -> dict[str, Any]:
    """Declare the stack under `applier`; return the resolved outputs (secrets included)."""
    from components.stack import AiMeetingStack

    pulumi.runtime.set_mocks(applier, project="ai-meeting", stack=stack, preview=False)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def run():
        s = AiMeetingStack("ai-meeting", cfg)
        return pulumi.Output.all(**{k: pulumi.Output.from_input(v) for k, v in s.outputs.items()}).apply(resolved.update)

    run()
    return resolved
