"""The two ways to run the same stack: the plan's docker compose, and `pulumi up` of the program.

Each side offers the same operations (cold deploy, no-op re-run, scale, roll the API image,
teardown) and reports how long the command itself took; bench/run.py measures around them
what a user sees (healthy containers, what nginx serves).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .compose import API_IMAGE_VAR, COMPOSE_FILE, set_env_value, write_env_file
from .measure import docker
from .settings import COMPOSE, COMPOSE_PROJECT, DEMO_1, MIGRATE, PULUMI, REPO, Side, dev_stack_values, merged_overrides
from tests.support import PulumiProject, toolchain_env

from .patching import apply_patch


@dataclass
class Timed:
    seconds: float
    started: float  # monotonic
    ended: float
    output: str = ""
    code: int = 0
    changes: int | None = None  # resources changed (pulumi) / containers created or recreated (compose)
    steps: list[dict] = field(default_factory=list)  # pulumi: per-resource operation timings
    first_resource: float | None = None  # pulumi: seconds until the program registered its first resource
    last_event: float | None = None  # pulumi: seconds until the engine's last event (summary)


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 900) -> Timed:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    t1 = time.monotonic()
    return Timed(t1 - t0, t0, t1, proc.stdout + proc.stderr, proc.returncode)


class SideError(RuntimeError):
    pass


# ---- docker compose ---------------------------------------------------------------------------------


def compose_cli() -> tuple[list[str], str]:
    """The compose command and its version line: Compose v2 (`docker compose` plugin or a
    standalone v2 binary) when present, else Debian's docker-compose 1.x."""
    plugin = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if plugin.returncode == 0 and plugin.stdout.strip():
        return ["docker", "compose"], f"Docker Compose {plugin.stdout.strip()} (plugin)"
    exe = shutil.which("docker-compose")
    if not exe:
        raise SideError("no docker compose: install Debian's docker-compose (scripts/setup does)")
    version = subprocess.run([exe, "version", "--short"], capture_output=True, text=True).stdout.strip()
    return [exe], f"docker-compose {version}" + (" (Debian, v1)" if version.startswith("1.") else "")


class ComposeSide:
    side: Side = COMPOSE
    key = "compose"
    stack_label = "bench-compose"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.cli, self.version = compose_cli()
        self.env_file = write_env_file(workdir)
        self.network = f"{self.side.name_prefix}-network"
        self.replicas = 1

    def compose(self, *args: str, timeout: float = 600) -> Timed:
        cmd = [*self.cli, "-p", COMPOSE_PROJECT, "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file), *args]
        res = _run(cmd, cwd=COMPOSE_FILE.parent, timeout=timeout)
        res.changes = sum(1 for line in res.output.splitlines() if line.strip().startswith(("Creating", "Recreating")) and "done" in line)
        if res.code != 0:
            raise SideError(f"{' '.join(args[:3])}: exit {res.code}\n{res.output[-3000:]}")
        return res

    def teardown(self) -> Timed:
        return self.compose("down", "-v", "--remove-orphans", "-t", "30")

    def deploy(self) -> Timed:
        """Plan §7.1: `docker-compose up -d` (the API image from the env file)."""
        return self.compose("up", "-d", "--scale", f"api={self.replicas}")

    def migrate(self) -> Timed:
        """Plan §7.2: migrations inside the API container."""
        return self.compose("exec", "-T", "api", *MIGRATE)

    def scale(self, n: int) -> Timed:
        """Plan §13.1: `up -d --scale api=N`; nginx resolves `api` again only when reloaded."""
        self.replicas = n
        up = self.compose("up", "-d", "--no-recreate", "--scale", f"api={n}")
        reload = self.reload_nginx()
        return Timed(reload.ended - up.started, up.started, reload.ended, up.output + reload.output, 0, up.changes)

    def reload_nginx(self) -> Timed:
        res = _run(["docker", "exec", f"{self.side.name_prefix}-nginx", "nginx", "-s", "reload"])
        if res.code != 0:
            raise SideError(f"nginx reload: {res.output[-1000:]}")
        return res

    def rollout(self, image: str) -> Timed:
        """Plan §8.2: a new image, then `docker-compose up -d --no-deps api` (recreates the replicas)."""
        set_env_value(self.env_file, API_IMAGE_VAR, image)
        return self.compose("up", "-d", "--no-deps", "--scale", f"api={self.replicas}", "api")

    def reset(self) -> None:
        set_env_value(self.env_file, API_IMAGE_VAR, DEMO_1)
        self.replicas = 1


# ---- pulumi up ----------------------------------------------------------------------------------------


class _EventTail:
    """Follows `--event-log FILE` while the engine writes it, stamping each event with the
    monotonic time it appeared (the events' own timestamps are whole seconds)."""

    def __init__(self, path: Path):
        self.path = path
        self.events: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        buf, pos = "", 0
        while True:
            stopping = self._stop.is_set()
            if self.path.exists():
                with self.path.open() as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                buf += chunk
                *lines, buf = buf.split("\n")
                now = time.monotonic()
                for line in lines:
                    if line.strip():
                        try:
                            self.events.append((now, json.loads(line)))
                        except ValueError:
                            pass
            if stopping:
                return
            self._stop.wait(0.05)

    def __enter__(self) -> "_EventTail":
        self.path.unlink(missing_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def steps_of(events: list[tuple[float, dict]], t0: float) -> tuple[list[dict], int | None]:
    """Per resource: operation, start and end (seconds after t0); and how many resources the
    engine changed (summaryEvent: everything but `same`)."""
    open_: dict[str, dict] = {}
    steps: list[dict] = []
    changes = None
    first: dict | None = None
    for t, e in events:
        if "resourcePreEvent" in e:
            md = e["resourcePreEvent"]["metadata"]
            if first is None:
                # The program has run far enough to register its first resource (the stack).
                first = {"urn": "", "name": "(first resource registered)", "type": "", "op": md.get("op"),
                         "start": round(t - t0, 2), "end": round(t - t0, 2)}
                steps.append(first)
            if md.get("op") in ("same", "read"):
                continue
            row = {"urn": md["urn"], "name": md["urn"].rsplit("::", 1)[-1], "type": md.get("type", ""),
                   "op": md.get("op"), "start": round(t - t0, 2)}
            open_[f"{md['urn']}|{md.get('op')}"] = row
            steps.append(row)
        elif "resOutputsEvent" in e or "resOpFailedEvent" in e:
            ev = e.get("resOutputsEvent") or e.get("resOpFailedEvent")
            md = ev["metadata"]
            row = open_.pop(f"{md['urn']}|{md.get('op')}", None)
            if row is not None:
                row["end"] = round(t - t0, 2)
                row["failed"] = "resOpFailedEvent" in e
        elif "summaryEvent" in e:
            rc = e["summaryEvent"].get("resourceChanges") or {}
            # `read`: reading a data source changes nothing.
            changes = sum(n for op, n in rc.items() if op not in ("same", "read"))
    return steps, changes


class PulumiSide:
    side: Side = PULUMI
    key = "pulumi"
    stack = "bench"
    stack_label = "bench"

    def __init__(self, workdir: Path, patches: list[Path] | None = None):
        # tests/support's engine harness: a copy of the project, its own backend
        self.workdir = workdir
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        env = toolchain_env()
        if shutil.which("pulumi", path=env["PATH"]) is None:
            raise SideError("the pulumi CLI is not installed (scripts/install-pulumi, or scripts/setup)")
        # Its own stack file: Pulumi.dev.yaml's settings without its encryption salt (a salt
        # belongs to the passphrase of the stack that made it).
        self.project = PulumiProject(workdir / "project", self.stack, env)
        if patches:
            for patch in patches:
                apply_patch(patch, self.project.dir)
        self.version = subprocess.run(["pulumi", "version"], capture_output=True, text=True, env=env).stdout.strip()
        self.network = f"{self.side.name_prefix}-network"
        self.replicas = 1
        self.image = DEMO_1
        self._configure()
        self._n = 0

    def _configure(self) -> None:
        dev = dev_stack_values()
        values = {**dev, **merged_overrides(self.side, self.replicas)}
        values["images"] = {**dev["images"], "api": self.image}
        self.project.configure(**values)

    def pulumi(self, command: str, *extra: str, timeout: float = 900) -> Timed:
        self._n += 1
        log = self.workdir / f"events-{self._n:03d}-{command}.jsonl"
        args = [command, "--stack", self.stack, "--non-interactive", "--event-log", str(log), *extra]
        if command in ("up", "destroy"):
            args += ["--yes", "--skip-preview"]
        env = {**self.project.env, "PULUMI_DEBUG_COMMANDS": "true"}
        with _EventTail(log) as tail:
            res = _run(["pulumi", *args], env=env, cwd=self.project.dir, timeout=timeout)
        res.steps, res.changes = steps_of(tail.events, res.started)
        firsts = [s for s in res.steps if s["name"] == "(first resource registered)"]
        res.first_resource = firsts[0]["start"] if firsts else None
        res.last_event = round(tail.events[-1][0] - res.started, 2) if tail.events else None
        if res.code != 0:
            raise SideError(f"pulumi {command}: exit {res.code}\n{res.output[-4000:]}")
        return res

    def teardown(self) -> Timed:
        return self.pulumi("destroy")

    def deploy(self) -> Timed:
        return self.pulumi("up")

    def preview(self) -> Timed:
        return self.pulumi("preview")

    def scale(self, n: int) -> Timed:
        self.replicas = n
        self._configure()
        return self.pulumi("up")

    def rollout(self, image: str) -> Timed:
        self.image = image
        self._configure()
        return self.pulumi("up")

    def reset(self) -> None:
        self.replicas, self.image = 1, DEMO_1
        self._configure()


def remove_leftovers(prefix: str) -> list[str]:
    """Containers, network and volumes of an earlier bench run that did not clean up (names
    are ours: `<prefix>-...` on `<prefix>-network`)."""
    removed = []
    ids = docker("ps", "-aq", "--filter", f"network={prefix}-network", check=False).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
        removed += ids
    if docker("network", "inspect", f"{prefix}-network", check=False).returncode == 0:
        docker("network", "rm", f"{prefix}-network", check=False)
        removed.append(f"{prefix}-network")
    for vol in ("postgres-data", "redis-data", "minio-data", "nginx-upstreams"):
        name = f"{prefix}-{vol}"
        if docker("volume", "inspect", name, check=False).returncode == 0:
            docker("volume", "rm", name, check=False)
            removed.append(name)
    return removed


__all__ = ["ComposeSide", "PulumiSide", "SideError", "Timed", "remove_leftovers", "REPO"]
