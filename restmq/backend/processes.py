"""What the embedded server's supervisor asks of the operating system about processes and users:
is a pid alive, was it started with our config, which user and groups will it run as."""

from __future__ import annotations

import os
import pwd
import subprocess


def groups_of(uid: int, gid: int) -> set[int]:
    """The groups a process of ``uid`` has after twistd's switch (initgroups): ``gid`` and the user's."""
    try:
        return {gid, *os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)}
    except KeyError:
        return {gid}


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _has_procfs() -> bool:
    return os.path.isdir("/proc/self")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (zombies count as dead: they only wait to be reaped)."""
    if _has_procfs():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except FileNotFoundError:
            return False
        except OSError:
            pass
        else:
            # the state is the first field after the parenthesised command name
            end = stat.rfind(b")")
            return stat[end + 2 : end + 3] not in (b"Z", b"X", b"x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> list[str]:
    """The arguments ``pid`` was started with (``/proc``, else ``ps``); empty when unknown."""
    if _has_procfs():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return []
        return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]
    try:  # macOS and the BSDs: one-off, at start-up only
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return out.decode("utf-8", "surrogateescape").split()


def is_our_server(pid: int, conf_path: str) -> bool:
    """Whether ``pid`` is a redis/valkey server started with our ``redis.conf`` (not a reused pid)."""
    args = cmdline(pid)
    if len(args) < 2:
        return False
    name = os.path.basename(args[0]).lower()
    if "redis" not in name and "valkey" not in name:
        return False
    return any(os.path.realpath(a) == os.path.realpath(conf_path) for a in args[1:])
