"""render_redis_command with the real redis-server: password, memory policy, AOF."""
from __future__ import annotations

import os
import subprocess

import pytest

from render.redis import RedisSettings, redis_healthcheck_test, render_redis_args, render_redis_command

from render_testlib import free_port, need_tool, stop_process, wait_port

PASSWORD = "p@ss w\"o'rd $HOME `x`"  # shell-hostile on purpose: it must arrive verbatim


def cli(port: int, *args: str, password: str | None = PASSWORD) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password  # how the container healthcheck authenticates
    return subprocess.run([need_tool("redis-cli"), "-p", str(port), "--no-auth-warning", *args],
                          capture_output=True, text=True, env=env, timeout=30)


@pytest.fixture
def redis(tmp_path):
    need_tool("redis-server")
    need_tool("sh")
    settings = RedisSettings(maxmemory="64mb", maxmemory_policy="allkeys-lru", data_dir=str(tmp_path))
    port = free_port()
    # The container command exactly as rendered; "$@" takes the test-only extra arguments.
    cmd = render_redis_command(settings) + ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": PASSWORD}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=proc)
        yield port, proc, tmp_path
    finally:
        stop_process(proc)


def test_password_required(redis):
    port, _, _ = redis
    r = cli(port, "get", "x", password=None)
    assert "NOAUTH" in r.stdout + r.stderr
    r = cli(port, "ping", password="wrong")
    assert "WRONGPASS" in r.stdout + r.stderr or "invalid" in (r.stdout + r.stderr).lower()
    assert cli(port, "ping").stdout.strip() == "PONG"


def test_settings_applied(redis):
    port, _, tmp = redis
    def get(key: str) -> str:
        return cli(port, "config", "get", key).stdout.split("\n")[1]
    assert get("maxmemory") == str(64 * 1024 * 1024)
    assert get("maxmemory-policy") == "allkeys-lru"
    assert get("appendonly") == "yes"
    assert get("appendfsync") == "everysec"
    assert get("dir") == str(tmp)
    assert get("requirepass") == PASSWORD


def test_password_not_on_command_line(redis):
    port, proc, _ = redis
    cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read().decode(errors="replace")
    assert "p@ss" not in cmdline  # redis rewrites its process title; and exec replaced sh
    assert all(PASSWORD not in a for a in render_redis_command(RedisSettings()))
    # Not even for the moment before Redis rewrites its title: the password goes in on stdin.
    assert "requirepass" not in render_redis_command(RedisSettings())[2].split("<<")[0]


def test_exec_makes_redis_the_process(redis):
    port, proc, _ = redis
    pid = cli(port, "info", "server").stdout.split("process_id:")[1].split()[0]
    assert int(pid) == proc.pid  # sh exec'd: docker stop's SIGTERM reaches redis directly


def test_healthcheck_command_uses_env_auth(redis):
    port, _, _ = redis
    test = redis_healthcheck_test()
    assert test[0] == "CMD-SHELL" and "REDIS" not in test[1]
    env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": PASSWORD}
    r = subprocess.run(["sh", "-c", test[1].replace("redis-cli", f"redis-cli -p {port}")], env=env)
    assert r.returncode == 0


def test_args():
    args = render_redis_args(RedisSettings(appendonly=False, maxmemory="2GB"))
    assert args[args.index("--appendonly") + 1] == "no"
    assert args[args.index("--maxmemory") + 1] == "2gb"
    assert "--requirepass" not in args


@pytest.mark.parametrize("kw", [{"maxmemory": "2 gb"}, {"maxmemory": "lots"}, {"maxmemory_policy": "lru"},
                                {"appendonly": "yes"}, {"appendfsync": "sometimes"}, {"data_dir": "data"}])
def test_invalid(kw):
    with pytest.raises(ValueError):
        RedisSettings(**kw)
