"""A private Redis Cluster on loopback for tests and benches: N masters with R replicas each.

Each node is a ``redis-server --cluster-enabled yes`` on a free port (its cluster bus, port + 10000,
free too); ``redis-cli --cluster create … --cluster-yes`` assigns the slots and the replicas. The
short ``cluster-node-timeout`` makes a failover take a few seconds, not the default fifteen. Plain
blocking code (subprocess and sockets): fixtures and benches call it before any reactor runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from restmq.backend.local import free_port, redis_server_binary

#: The cluster bus of a node listens on its port plus this (Redis's fixed offset).
BUS_OFFSET = 10000


class ClusterStartError(RuntimeError):
    """The cluster could not be started; the message says which step failed."""


def redis_cli_binary() -> str | None:
    """The redis-cli (or valkey-cli) on PATH, or None."""
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


def command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command to ``127.0.0.1:port`` over a raw socket; the raw reply (first read)."""
    payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = s.recv(1 << 20)
        # bulk replies (CLUSTER INFO) may come in several reads
        if data.startswith(b"$"):
            size = int(data[1:data.index(b"\r\n")])
            while len(data) < size + len(b"$\r\n\r\n") + len(str(size)):
                more = s.recv(1 << 20)
                if not more:
                    break
                data += more
        return data


def _cluster_port() -> int:
    """A free port whose bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET >= 65536:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


@dataclass
class ClusterNode:
    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None
    #: The node's TLS port when the cluster speaks TLS (the plain port stays for administration).
    tls_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """A running cluster: its nodes, and how to start, query, kill and stop them."""

    nodes: list[ClusterNode]
    directory: str
    binary: str
    node_timeout: int
    own_directory: bool = True
    extra: list[str] = field(default_factory=list)
    #: (certificate, key) PEM files when the nodes also listen for TLS (``tls-cluster yes``).
    tls: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node as a seed (``rediss+cluster://`` to the
        TLS ports, trusting the cluster's certificate, when it speaks TLS)."""
        if self.tls is not None:
            seeds = ",".join(f"127.0.0.1:{n.tls_port}" for n in self.nodes)
            return f"rediss+cluster://{seeds}?ssl_ca_certs={self.tls[0]}"
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start_node(self, node: ClusterNode) -> None:
        """Start (or restart, keeping its nodes.conf) one node's redis-server."""
        node.process = subprocess.Popen(
            [
                self.binary, "--port", str(node.port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout),
                "--save", "", "--appendonly", "no", "--dir", node.directory,
                "--protected-mode", "no", *self._tls_options(node), *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if command(node.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return
            except OSError:
                time.sleep(0.05)
        raise ClusterStartError(f"redis-server on port {node.port} did not start")

    def _tls_options(self, node: ClusterNode) -> list[str]:
        if self.tls is None:
            return []
        cert, key = self.tls
        return [
            "--tls-port", str(node.tls_port), "--tls-cluster", "yes", "--tls-replication", "yes",
            "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
            "--tls-auth-clients", "no",
        ]

    def info(self, node: ClusterNode) -> dict[str, str]:
        """``CLUSTER INFO`` of one node as a dict."""
        raw = command(node.port, "CLUSTER", "INFO").decode("utf-8", "replace")
        return dict(line.split(":", 1) for line in raw.splitlines()[1:] if ":" in line)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and knows every other node."""
        deadline = time.monotonic() + timeout
        live = [n for n in self.nodes if n.alive()]
        while time.monotonic() < deadline:
            try:
                infos = [self.info(n) for n in live]
                if all(
                    i.get("cluster_state") == "ok" and int(i.get("cluster_known_nodes", 0)) >= len(self.nodes)
                    for i in infos
                ):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ClusterStartError("the cluster did not reach cluster_state:ok")

    def masters(self) -> list[ClusterNode]:
        """The live nodes that serve slots now (their own view)."""
        found = []
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                role = command(node.port, "ROLE")
            except OSError:
                continue
            if b"master" in role.split(b"\r\n", 3)[2]:
                found.append(node)
        return found

    def nodes_text(self) -> list[list[str]]:
        """``CLUSTER NODES`` of the first live node that answers, one list of fields per node."""
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                raw = command(node.port, "CLUSTER", "NODES")
            except OSError:
                continue
            text = raw.split(b"\r\n", 1)[1].decode()
            return [line.split() for line in text.splitlines() if line.strip()]
        raise ClusterStartError("no node answers")

    def node_of_slot(self, slot: int) -> ClusterNode:
        """The master serving ``slot`` now, in the first live node's view."""
        for fields in self.nodes_text():
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated: [slot->-id]
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise ClusterStartError(f"no master serves slot {slot}")

    def node_id(self, node: ClusterNode) -> str:
        """The cluster node id of ``node``."""
        return command(node.port, "CLUSTER", "MYID").split(b"\r\n")[1].decode()

    def kill(self, node: ClusterNode) -> None:
        """kill -9 one node (a crash, not a shutdown)."""
        if node.process is not None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(10)

    def flush(self) -> None:
        """FLUSHALL on every live master (replicas follow)."""
        for node in self.masters():
            command(node.port, "FLUSHALL")

    def stop(self) -> None:
        """Stop every node and remove the directory this cluster created."""
        for node in self.nodes:
            if node.alive():
                assert node.process is not None
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
        if self.own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(
    masters: int = 3,
    replicas: int = 1,
    *,
    directory: str | None = None,
    binary: str | None = None,
    node_timeout: int = 1000,
    extra: list[str] | None = None,
    tls: tuple[str, str] | None = None,
) -> LocalCluster:
    """Start ``masters`` × (1 + ``replicas``) cluster nodes and join them; ready when this returns.

    ``node_timeout`` (ms) is ``cluster-node-timeout``: how long a master may be silent before its
    replicas take over. With ``tls`` (certificate and key PEM files, the certificate also the CA)
    every node listens for TLS too and the cluster bus and replication use it. Raises :class:`ClusterStartError` (nodes stopped) on any failure.
    """
    cli = redis_cli_binary()
    if cli is None:
        raise ClusterStartError("redis-cli is not on PATH: it creates the cluster")
    own = directory is None
    root = directory or tempfile.mkdtemp(prefix="restmq-cluster-")
    nodes = []
    for _ in range(masters * (1 + replicas)):
        port = _cluster_port()
        path = os.path.join(root, str(port))
        os.makedirs(path, exist_ok=True)
        nodes.append(ClusterNode(port, path, tls_port=_cluster_port() if tls else None))
    cluster = LocalCluster(nodes, root, redis_server_binary(binary), node_timeout, own, list(extra or []), tls)
    try:
        for node in nodes:
            cluster.start_node(node)
        addresses = [f"127.0.0.1:{n.tls_port}" for n in nodes] if tls else [n.address for n in nodes]
        over_tls = ["--tls", "--cacert", tls[0]] if tls else []
        result = subprocess.run(
            [cli, *over_tls, "--cluster", "create", *addresses,
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, timeout=60, check=False,
        )
        if result.returncode != 0:
            raise ClusterStartError(
                "redis-cli --cluster create failed: " + result.stdout.decode(errors="replace")[-500:]
            )
        cluster.wait_ok()
        # replicas attach asynchronously: wait until every master has its replicas
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = [command(n.port, "INFO", "replication").count(b"state=online") for n in cluster.masters()]
            if len(counts) == masters and all(c >= replicas for c in counts):
                break
            time.sleep(0.1)
        else:
            raise ClusterStartError("the replicas did not attach to their masters")
    except BaseException:
        cluster.stop()
        raise
    return cluster
