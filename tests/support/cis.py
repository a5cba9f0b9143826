"""The container-runtime items of the CIS Docker Benchmark (v1.6, section 5, and 4.1), read from
`docker inspect` and from the container's own /proc/1/status (what the kernel enforces, so the
daemon-wide no-new-privileges of a swarm node counts as well as the container's option).

Not checked, by design (README: Hardening): 5.7 (nginx maps 80 and 443), 5.14 (restart
`unless-stopped`, so a service comes back after a reboot; `on-failure:5` would leave a
crash-looping one down), 5.22/5.23 (how operators use `docker exec`), 5.27 (pinned images: the
policy pack), 5.6 (no image runs sshd).

One checker for every tier: the e2e dev stack, the prod test server and the swarm nodes each
hand it the inspect document, the status text and what README: Hardening promises for the
service. `findings()` returns the items that do not hold, each naming the container and item.
"""

from __future__ import annotations

from dataclasses import dataclass

# Linux capability numbers (include/uapi/linux/capability.h) of Docker's default set.
CAP_BITS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7, "SETPCAP": 8,
    "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31,
}
# Host directories a container must not be able to write (CIS 5.5).
SENSITIVE = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr", "/var/run/docker.sock", "/run/docker.sock")
LABEL_SERVICE = "ai-meeting.service"
# Services that run as a user other than root (README: Hardening). minio and nginx's master
# are root, without capabilities beyond their list.
NON_ROOT = ("postgres", "redis", "api", "web", "prometheus", "alertmanager", "node-exporter", "blackbox-exporter")
# Services that publish beyond 127.0.0.1 (CIS 5.13): the edge only.
EDGE = ("nginx",)


@dataclass(frozen=True)
class Promise:
    """What the stack promises for a service's containers (README: Hardening)."""

    cap_add: frozenset[str] = frozenset()
    read_only_root: bool = True
    pids_limit: bool = True  # one server: a pids limit; a swarm has none (refused in config)


def capability_mask(caps: frozenset[str]) -> int:
    return sum(1 << CAP_BITS[c] for c in caps)


def _status(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if k}


def _caps(values: list[str] | None) -> set[str]:
    return {v.upper().removeprefix("CAP_") for v in values or []}


def findings(inspect: dict, proc_status: str, service: str, promise: Promise) -> list[str]:
    """Every CIS item that does not hold for this container: `<name>: <item>: <what was seen>`."""
    hc, cfg = inspect["HostConfig"], inspect["Config"]
    status = _status(proc_status)
    uid = int(status["Uid"].split()[0])
    cap_eff = int(status["CapEff"], 16)
    security_opt = [o.replace("=", ":") for o in hc.get("SecurityOpt") or []]
    bad: list[str] = []

    def item(ok: bool, what: str, seen: object) -> None:
        if not ok:
            bad.append(f"{inspect['Name'].lstrip('/')}: {what}: {seen}")

    item(uid != 0 or service not in NON_ROOT, "4.1 runs as a non-root user", f"uid {uid}")
    item("ALL" in _caps(hc.get("CapDrop")), "5.3 all capabilities dropped", hc.get("CapDrop"))
    item(_caps(hc.get("CapAdd")) == set(promise.cap_add), "5.3 only the listed capabilities added",
         sorted(_caps(hc.get("CapAdd"))))
    expected_eff = capability_mask(promise.cap_add) if uid == 0 else 0
    item(cap_eff == expected_eff, "5.3 effective capabilities of the process", f"CapEff {cap_eff:#x}, want {expected_eff:#x}")
    item(not hc.get("Privileged"), "5.4 not privileged", hc.get("Privileged"))
    for m in inspect.get("Mounts") or []:
        if m.get("Type") == "bind":
            item(not (m["Source"].rstrip("/") or "/") in SENSITIVE or not m.get("RW"),
                 "5.5 no sensitive host directory writable", m["Source"])
            item("docker.sock" not in m["Source"], "5.31 no Docker socket", m["Source"])
        item(m.get("Propagation") not in ("shared", "rshared"), "5.19 mount propagation not shared", m.get("Propagation"))
    # What the container is attached to (the provider creates it on "bridge" and moves it to
    # the stack's network before it starts; NetworkMode keeps saying "bridge").
    attached = sorted((inspect.get("NetworkSettings") or {}).get("Networks") or {})
    item(hc.get("NetworkMode") != "host" and bool(attached) and not set(attached) & {"host", "bridge"},
         "5.9/5.29 own user network, not the host's or docker0", attached)
    item(int(hc.get("Memory") or 0) > 0, "5.10 memory limit", hc.get("Memory"))
    item(int(hc.get("NanoCpus") or 0) > 0 or int(hc.get("CpuQuota") or 0) > 0, "5.11 CPU limit", hc.get("NanoCpus"))
    item(bool(hc.get("ReadonlyRootfs")) == promise.read_only_root, "5.12 read-only root filesystem", hc.get("ReadonlyRootfs"))
    for port, bindings in (hc.get("PortBindings") or {}).items():
        for b in bindings or []:
            item(service in EDGE or b.get("HostIp") == "127.0.0.1", "5.13 published only on 127.0.0.1 (edge excepted)",
                 f"{port} on {b.get('HostIp') or '0.0.0.0'}")
    item(hc.get("PidMode") != "host", "5.15 host PID namespace not shared", hc.get("PidMode"))
    item(hc.get("IpcMode") != "host", "5.16 host IPC namespace not shared", hc.get("IpcMode"))
    item(not hc.get("Devices"), "5.17 no host devices", hc.get("Devices"))
    item(not hc.get("Ulimits"), "5.18 default ulimits", hc.get("Ulimits"))
    item(hc.get("UTSMode") != "host", "5.20 host UTS namespace not shared", hc.get("UTSMode"))
    item(not any(o.startswith(("seccomp:unconfined", "apparmor:unconfined", "label:disable")) for o in security_opt),
         "5.1/5.2/5.21 seccomp, AppArmor and SELinux profiles kept", security_opt)
    item(not hc.get("CgroupParent"), "5.24 default cgroup", hc.get("CgroupParent"))
    item(status.get("NoNewPrivs") == "1", "5.25 no-new-privileges", f"NoNewPrivs {status.get('NoNewPrivs')}")
    item(bool((cfg.get("Healthcheck") or {}).get("Test")), "5.26 healthcheck", cfg.get("Healthcheck"))
    if promise.pids_limit:
        item(int(hc.get("PidsLimit") or 0) > 0, "5.28 pids limit", hc.get("PidsLimit"))
    item(hc.get("UsernsMode") != "host", "5.30 host user namespace not shared", hc.get("UsernsMode"))
    return bad


def check_containers(inspected: list[dict], proc_status, promised: dict[str, "Promise"]) -> list[str]:
    """findings() of every container in `inspected` (docker inspect documents); `proc_status(id)`
    returns that container's /proc/1/status, read wherever the tier's engine is."""
    bad: list[str] = []
    for c in inspected:
        service = c["Config"]["Labels"][LABEL_SERVICE]
        bad += findings(c, proc_status(c["Id"]), service, promised[service])
    return bad


def promises(hardening: dict[str, dict], *, swarm: bool = False) -> dict[str, Promise]:
    """Service -> Promise from the stack's hardening config (`StackConfig.hardening`, dumped)."""
    out = {}
    monitoring = ("prometheus", "alertmanager", "node-exporter", "blackbox-exporter", "grafana")
    for service in ("postgres", "redis", "minio", "api", "web", "nginx", *monitoring):
        h = hardening["monitoring" if service in monitoring else service]
        out[service] = Promise(cap_add=frozenset(h["cap_add"]), read_only_root=h["read_only_root"], pids_limit=not swarm)
    return out
