"""The CIS checker (tests/support/cis.py) that the e2e, prod and swarm tiers run against live
containers: a hardened container passes, and each loosening is reported by its item."""

from __future__ import annotations

import copy

import pytest

from config.model import Hardening
from tests.support.cis import Promise, capability_mask, findings, promises

NGINX = Promise(cap_add=frozenset({"CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID"}))
HARDENED = {
    "Name": "/aim-nginx",
    "Config": {"Healthcheck": {"Test": ["CMD-SHELL", "curl -fsS https://127.0.0.1/health"]}},
    "HostConfig": {
        "CapDrop": ["ALL"], "CapAdd": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID"],
        "Privileged": False, "ReadonlyRootfs": True, "SecurityOpt": ["no-new-privileges:true"], "NetworkMode": "aim-network",
        "Memory": 268435456, "NanoCpus": 1000000000, "PidsLimit": 128,
        "PortBindings": {"443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "443"}]},
    },
    "Mounts": [{"Type": "bind", "Source": "/opt/ai-meeting/logs/nginx", "RW": True, "Propagation": "rprivate"}],
    "NetworkSettings": {"Networks": {"aim-network": {}}},
}
ROOT_STATUS = f"Uid:\t0\t0\t0\t0\nNoNewPrivs:\t1\nCapEff:\t{capability_mask(NGINX.cap_add):016x}\n"


def loosened(**host_config) -> dict:
    doc = copy.deepcopy(HARDENED)
    doc["HostConfig"].update(host_config)
    return doc


def test_a_hardened_container_passes():
    assert findings(HARDENED, ROOT_STATUS, "nginx", NGINX) == []
    assert capability_mask(NGINX.cap_add) == 0x4C1


@pytest.mark.parametrize("change, item", [
    ({"CapDrop": []}, "5.3 all capabilities dropped"),
    ({"CapAdd": ["CAP_SYS_ADMIN"]}, "5.3 only the listed capabilities"),
    ({"Privileged": True}, "5.4 not privileged"),
    ({"ReadonlyRootfs": False}, "5.12 read-only root filesystem"),
    ({"NetworkMode": "host"}, "5.9/5.29"),
    ({"Memory": 0}, "5.10 memory limit"),
    ({"PidsLimit": 0}, "5.28 pids limit"),
    ({"PidMode": "host"}, "5.15 host PID"),
    ({"SecurityOpt": ["seccomp=unconfined"]}, "5.1/5.2/5.21"),
])
def test_each_loosening_is_reported_by_its_item(change, item):
    (finding,) = findings(loosened(**change), ROOT_STATUS, "nginx", NGINX)
    assert finding.startswith(f"aim-nginx: {item}"), finding


def test_what_the_kernel_enforces_is_read_from_the_process():
    no_nnp = ROOT_STATUS.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")
    assert [f for f in findings(HARDENED, no_nnp, "nginx", NGINX) if "5.25 no-new-privileges" in f]
    all_caps = ROOT_STATUS.replace(f"{capability_mask(NGINX.cap_add):016x}", "00000000a80425fb")
    assert [f for f in findings(HARDENED, all_caps, "nginx", NGINX) if "effective capabilities" in f]
    as_root = findings(HARDENED, ROOT_STATUS, "api", NGINX)
    assert any("4.1 runs as a non-root user" in f for f in as_root), "api must not run as root"
    private_port = loosened(PortBindings={"5432/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5432"}]})
    assert any("5.13" in f for f in findings(private_port, ROOT_STATUS, "postgres", NGINX))
    on_docker0 = copy.deepcopy(HARDENED)
    on_docker0["NetworkSettings"]["Networks"]["bridge"] = {}
    assert any("5.9/5.29" in f for f in findings(on_docker0, ROOT_STATUS, "nginx", NGINX))
    socket = copy.deepcopy(HARDENED)
    socket["Mounts"].append({"Type": "bind", "Source": "/var/run/docker.sock", "RW": True})
    assert any("5.31 no Docker socket" in f for f in findings(socket, ROOT_STATUS, "nginx", NGINX))


def test_promises_follow_the_config():
    p = promises(Hardening().model_dump())
    assert p["nginx"] == NGINX and p["api"] == Promise() and p["prometheus"] == Promise()
    assert not promises(Hardening().model_dump(), swarm=True)["postgres"].pids_limit
