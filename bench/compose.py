"""The plan's docker-compose.yml (§4.5), generated from our program so it cannot drift.

The Pulumi program is declared under mocks with the compose side's stack config, and every
container it declares is written as a compose service with the same image, command,
environment, healthcheck, CPU/memory limits, restart policy, log rotation, labels, network
aliases, volumes, published ports and files (nginx.conf, the init SQL). What differs is what
compose does differently, as in the plan:

- secrets are `${VAR}` references, filled from an env file at run time (the plan's `.env`);
  the TLS certificate is a file made with openssl (plan §5.2, the program's key type);
- nginx's upstream file names the compose services (`api:3000`, `web:80`, plan §13), so it
  is static: nginx resolves `api` to the replicas when it (re)loads;
- API replicas are compose replicas (`--scale api=N`) of one service with no container name,
  each published on a free port of a small 127.0.0.1 range (the plan publishes the API on
  127.0.0.1:3000, which cannot be scaled);
- ordering is the plan's `depends_on`: the API after postgres/redis/minio are healthy, web
  and nginx once the API has started;
- the program's one-shot commands are the plan's manual steps (§7.2 migrations, §7.3
  checks), run by scripts/bench after `up`.

scripts/bench renders it afresh into bench/generated/ (not committed) before every run, so it
is always the program of this commit; `scripts/bench --render` (or `python -m bench.compose
[--out DIR]`) writes it alone, to read or to use by hand. tests/bench renders it and has
docker-compose validate it, so a program change the translation cannot express fails there.
"""

from __future__ import annotations

import secrets
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__" and "--project" in sys.argv:  # before `config`/`components` come from the repo
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--project") + 1]).resolve()))

import pulumi  # noqa: E402
import yaml  # noqa: E402

from config import StackConfig  # noqa: E402

from .settings import BENCH, COMPOSE, COMPOSE_API_DIRECT, DEMO_1, stack_config

GENERATED = BENCH / "generated"
COMPOSE_FILE = GENERATED / "docker-compose.yml"

# Generated secrets -> the variable the compose file reads (the plan's .env names).
SECRET_VARS = {
    "db-password": "DB_PASSWORD",
    "redis-password": "REDIS_PASSWORD",
    "minio-password": "MINIO_ROOT_PASSWORD",
    "turn-password": "TURN_PASSWORD",
    "jwt-secret": "JWT_SECRET",
}
TLS_DIR_VAR = "AIM_BENCH_TLS_DIR"
API_IMAGE_VAR = "AIM_API_IMAGE"


def _secret_marker(var: str) -> str:
    return f"__AIM_SECRET_{var}__"


def _file_marker(name: str) -> str:
    return f"__AIM_FILE_{name}__"


@dataclass
class _Declared:
    typ: str
    name: str
    inputs: dict[str, Any]


_SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if _SECRET_SIG in value:
            return _plain(value["value"])
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Recorder(pulumi.runtime.Mocks):
    resources: list[_Declared] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = _plain(dict(args.inputs))
        t = args.typ
        if t in ("random:index/randomPassword:RandomPassword", "random:index/randomBytes:RandomBytes"):
            marker = _secret_marker(SECRET_VARS[args.name])
            outputs["result"] = outputs["base64"] = marker
        elif t == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = args.inputs["name"]  # compose names images by reference
        elif t == "tls:index/privateKey:PrivateKey":
            outputs["privateKeyPem"] = _file_marker("privkey.pem")
        elif t == "tls:index/selfSignedCert:SelfSignedCert":
            outputs["certPem"] = _file_marker("fullchain.pem")
        elif t.startswith("command:"):
            outputs.setdefault("stdout", "")
            outputs.setdefault("stderr", "")
        elif t == "docker:index/container:Container":
            outputs["name"] = outputs.get("name") or f"{args.name}-declared"
        self.resources.append(_Declared(t, args.name, _plain(dict(args.inputs))))
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def declare(cfg: StackConfig) -> list[_Declared]:
    """Every resource the program declares for `cfg` (under mocks: nothing is created)."""
    from components.stack import AiMeetingStack

    rec = _Recorder()
    pulumi.runtime.set_mocks(rec, project="ai-meeting", stack="bench-compose", preview=False)

    @pulumi.runtime.test
    def run():
        stack = AiMeetingStack("ai-meeting", cfg)
        return pulumi.Output.all(*[pulumi.Output.from_input(v) for v in stack.outputs.values()]).apply(lambda _: None)

    run()
    return rec.resources


def _escape(value: str) -> str:
    """Compose interpolates `$`; the program's values are literal, so `$` -> `$$`, then the
    secret markers become `${VAR}`."""
    value = value.replace("$", "$$")
    for var in SECRET_VARS.values():
        value = value.replace(_secret_marker(var), "${" + var + "}")
    if "__AIM_" in value:
        raise ValueError(f"a generated value the compose file cannot express: {value[:80]!r}")
    return value


def _labels(items: list[dict[str, str]]) -> dict[str, str]:
    return {i["label"]: i["value"] for i in sorted(items, key=lambda i: i["label"])}


def _duration(value: str) -> str:
    return value


@dataclass
class Rendered:
    document: dict[str, Any]
    files: dict[str, str]  # path under bench/files -> content

    def compose_text(self) -> str:
        header = (
            "# Generated by bench/compose.py from the stack config and the program's declared\n"
            "# containers (scripts/bench --render). Do not edit: edit the program or bench/settings.py.\n"
            "# The plan's docker-compose.yml (§4.5) for the benchmark; secrets and the TLS directory\n"
            "# come from the env file scripts/bench writes (--env-file).\n"
        )
        return header + yaml.safe_dump(self.document, sort_keys=False, width=120, default_flow_style=False)


def render_compose(cfg: StackConfig | None = None) -> Rendered:
    from components import assembly
    from components.assembly import nginx_site
    from components.proxy import UPSTREAMS_DIR
    from render.nginx import maintenance_files, render_nginx_upstreams

    cfg = cfg or stack_config(COMPOSE)
    declared = declare(cfg)
    files: dict[str, str] = {}
    services: dict[str, Any] = {}
    networks: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    volume_keys: dict[str, str] = {}

    for r in declared:
        if r.typ == "docker:index/network:Network":
            networks["stack"] = {"name": r.inputs["name"], "driver": r.inputs.get("driver", "bridge"),
                                 "labels": _labels(r.inputs.get("labels", []))}
        elif r.typ == "docker:index/volume:Volume" and r.name != "nginx-upstreams":
            key = r.name  # postgres-data, redis-data, minio-data
            volume_keys[r.inputs["name"]] = key
            volumes[key] = {"name": r.inputs["name"], "labels": _labels(r.inputs.get("labels", []))}

    all_containers = [r for r in declared if r.typ == "docker:index/container:Container"]
    # The never-started carriers of read-only containers' files (components/on_server.py):
    # compose mounts those files directly, read-only.
    carriers = {f"{r.name}-id": r.inputs for r in all_containers if _labels(r.inputs.get("labels", [])).get("ai-meeting.kind") == "files"}
    containers = [r for r in all_containers if f"{r.name}-id" not in carriers]
    seen_api = False
    for c in containers:
        inp = c.inputs
        labels = _labels(inp.get("labels", []))
        service = labels["ai-meeting.service"]
        if service == "api":
            if seen_api:
                continue  # one compose service; replicas come from --scale
            seen_api = True
            labels.pop("ai-meeting.replica", None)
        svc: dict[str, Any] = {}
        image = inp["image"]
        svc["image"] = "${" + API_IMAGE_VAR + ":-" + DEMO_1 + "}" if service == "api" else image
        if service != "api":
            svc["container_name"] = inp.get("name") or cfg.container_name(service)
        if inp.get("command"):
            svc["command"] = [_escape(a) for a in inp["command"]]
        if inp.get("user"):
            svc["user"] = inp["user"]
        envs = inp.get("envs") or []
        if envs:
            svc["environment"] = {e.split("=", 1)[0]: _escape(e.split("=", 1)[1]) for e in envs}
        hc = inp["healthcheck"]
        svc["healthcheck"] = {
            "test": [_escape(t) for t in hc["tests"]],
            "interval": _duration(hc["interval"]),
            "timeout": _duration(hc["timeout"]),
            "retries": int(hc["retries"]),
            "start_period": _duration(hc["startPeriod"]),
        }
        svc["restart"] = inp["restart"]
        svc["cpus"] = float(inp["cpus"])
        svc["mem_limit"] = f"{int(inp['memory'])}m"
        svc["memswap_limit"] = f"{int(inp['memorySwap'])}m"
        svc["stop_grace_period"] = f"{int(inp.get('destroyGraceSeconds', 10))}s"
        svc["logging"] = {"driver": inp["logDriver"], "options": dict(inp.get("logOpts", {}))}
        svc["labels"] = labels
        # Least privilege, as the program declares it (README: Hardening); the pids limit,
        # which the program sets after creation, is compose's own key.
        svc["security_opt"] = list(inp["securityOpts"])
        svc["cap_drop"] = list(inp["capabilities"]["drops"])
        if inp["capabilities"].get("adds"):
            svc["cap_add"] = list(inp["capabilities"]["adds"])
        svc["read_only"] = bool(inp.get("readOnly"))
        if inp.get("tmpfs"):
            svc["tmpfs"] = [f"{path}:{options}" for path, options in sorted(inp["tmpfs"].items())]
        if inp.get("sysctls"):
            svc["sysctls"] = dict(inp["sysctls"])
        svc["pids_limit"] = getattr(cfg.hardening, service).pids_limit
        (net,) = inp["networksAdvanced"]
        aliases = [a for a in net["aliases"] if not (service == "api" and a.startswith("api-"))]
        svc["networks"] = {"stack": {"aliases": aliases}}
        ports = [f"{p['ip']}:{int(p['external'])}:{int(p['internal'])}" for p in inp.get("ports", [])]
        if service == "api":
            lo, hi = COMPOSE_API_DIRECT
            ports.append(f"127.0.0.1:{lo}-{hi}:{cfg.api.port}")
        if ports:
            svc["ports"] = ports
        mounts: list[str] = []
        uploads = list(inp.get("uploads", []))
        for v in inp.get("volumes", []):
            if v.get("fromContainer"):
                carrier = carriers[v["fromContainer"].removesuffix(":ro")]
                uploads += [u for u in carrier.get("uploads", []) if not u["file"].endswith("/.mountpoint")]
            elif v.get("volumeName") in volume_keys:
                mounts.append(f"{volume_keys[v['volumeName']]}:{v['containerPath']}")
            elif v.get("containerPath") == UPSTREAMS_DIR:
                # The program rewrites this file per rollout; compose names the services instead.
                files["nginx/upstreams/upstreams.conf"] = render_nginx_upstreams(
                    nginx_site(cfg, [f"api:{cfg.api.port}"], f"web:{cfg.web.port}", None)
                )
                # nginx.conf includes the maintenance switch from the same directory (off here).
                for name, text in maintenance_files(assembly.maintenance(cfg)).items():
                    files[f"nginx/upstreams/{name}"] = text
                mounts.append(f"./files/nginx/upstreams:{UPSTREAMS_DIR}:ro")
            elif v.get("hostPath"):
                mounts.append(f"{v['hostPath']}:{v['containerPath']}" + (":ro" if v.get("readOnly") else ""))
            elif not v.get("volumeName"):
                mounts.append(v["containerPath"])  # anonymous: goes with the container
            else:
                raise ValueError(f"{c.name}: a volume the compose file cannot express: {v}")
        for u in uploads:
            content, path = u["content"], u["file"]
            base = path.rsplit("/", 1)[1]
            if content.startswith("__AIM_FILE_"):
                mounts.append("${" + TLS_DIR_VAR + "}/" + base + f":{path}:ro")
            else:
                files[f"{service}/{base}"] = content
                mounts.append(f"./files/{service}/{base}:{path}:ro")
        if mounts:
            svc["volumes"] = mounts
        services[service] = svc

    # The plan's ordering (§4.5).
    services["api"]["depends_on"] = {s: {"condition": "service_healthy"} for s in ("postgres", "redis", "minio")}
    services["web"]["depends_on"] = ["api"]
    services["nginx"]["depends_on"] = ["web", "api"]
    order = ["postgres", "redis", "minio", "api", "web", "nginx"]
    document = {
        "version": "2.4",
        "services": {s: services[s] for s in order},
        "networks": networks,
        "volumes": {k: volumes[k] for k in sorted(volumes)},  # declaration order varies under mocks
    }
    return Rendered(document, files)


def write(rendered: Rendered, outdir: Path = GENERATED) -> list[Path]:
    """docker-compose.yml and the files it mounts (./files/...), replacing what was there."""
    if (outdir / "files").exists():
        shutil.rmtree(outdir / "files")
    outdir.mkdir(parents=True, exist_ok=True)
    written = [outdir / "docker-compose.yml"]
    written[0].write_text(rendered.compose_text())
    for rel, content in rendered.files.items():
        path = outdir / "files" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written


# ---- run time: the env file and the certificate -------------------------------------------------


def _password(n: int = 40) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def write_env_file(workdir: Path, api_image: str = DEMO_1) -> Path:
    """The plan's `.env` (§4.3-4.4): generated secrets, the TLS directory (plan §5.2 cert,
    ECDSA P-256 like the program's) and the API image. Mode 0600."""
    tls_dir = workdir / "ssl"
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (tls_dir / "fullchain.pem").exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-nodes", "-days", "30", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-subj", "/O=AI Meeting/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(tls_dir / "privkey.pem"), "-out", str(tls_dir / "fullchain.pem")],
            check=True, capture_output=True,
        )
    values = {var: _password() for var in SECRET_VARS.values()}
    values["JWT_SECRET"] = __import__("base64").b64encode(secrets.token_bytes(64)).decode()
    values[TLS_DIR_VAR] = str(tls_dir)
    values[API_IMAGE_VAR] = api_image
    env = workdir / "compose.env"
    env.touch(mode=0o600)
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return env


def set_env_value(env_file: Path, key: str, value: str) -> None:
    lines = [l for l in env_file.read_text().splitlines() if not l.startswith(f"{key}=")]
    env_file.write_text("\n".join([*lines, f"{key}={value}"]) + "\n")


def main(argv: list[str]) -> int:
    """python -m bench.compose [--out DIR] [--project DIR]: --project renders from another copy of
    the program (scripts/bench --variant: a patched copy); it must come first on sys.path before
    anything imports `components` or `config`, so use it in a fresh process."""
    outdir = Path(argv[argv.index("--out") + 1]).resolve() if "--out" in argv else GENERATED
    for path in write(render_compose(), outdir):
        print(path)
    return 0



if __name__ == "__main__":
    sys.exit(main(sys.argv))
