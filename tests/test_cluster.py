"""RestMQ on a real Redis Cluster (3 masters + 3 replicas on loopback): the URL, the slot router,
the contract through several front ends with queues on every master, a master killed under load
and a slot moved under load."""

from __future__ import annotations

import re
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from restmq.backend.cluster import key_slot
from restmq.backend.redisconf import parse_redis_url
from restmq.engine import keys as K
from restmq.engine.scripts import NAMES, declared_keys, per_queue, source
from restmq.errors import BadRequest


def test_cluster_urls_take_seeds_and_refuse_other_databases():
    """redis+cluster:// and rediss+cluster:// URLs name seed nodes; a database other than 0 is refused."""
    target = parse_redis_url("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert target.kind == "cluster"
    assert target.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (target.username, target.password, target.tls) == ("u", "p", False)
    assert target.display() == "redis+cluster://u:***@10.0.0.1:7000,10.0.0.2:6379,[::1]:7002"
    assert parse_redis_url("redis+cluster://h:1/0").seeds == (("h", 1),)
    tls = parse_redis_url("rediss+cluster://h:1?ssl_cert_reqs=none")
    assert tls.tls and not tls.verify
    for bad, why in [
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+cluster://h:1?db=3", "only database 0"),
        ("redis+cluster://", "no cluster node"),
        ("redis+cluster://h:1?ssl_cert_reqs=none", "need a rediss"),
        ("redis+cluster://h:99999", "port"),
    ]:
        with pytest.raises(BadRequest, match=why):
            parse_redis_url(bad)


def test_key_slots_follow_redis_cluster_hashing():
    """Keys land in the slots Redis Cluster computes: CRC16 of the key, or of its first {hash tag}."""
    assert key_slot("123456789") == 0x31C3 % 16384
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # empty tag: the whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot(b"rmq:{q}:ready") == key_slot("q")


def test_every_script_touches_one_hash_tag():
    """Every script's declared keys share the hash tag of one queue (dead-letter keys included),
    or are one global key alone: no script can fail with CROSSSLOT on a cluster."""
    for queue in ("q", "a.dead", "with:colon", "ünï", "x{y}z"):
        qk = K.for_queue(queue)
        for name in NAMES:
            roles = declared_keys(source(name))
            if roles == ("timers",):
                continue  # the sweeper's scripts: one global key and nothing else
            keys = qk.pick(roles)
            tags = {re.match(r"rmq:\{(.*?)\}", key).group(1) for key in keys}  # type: ignore[union-attr]
            assert len(tags) == 1, (name, queue, keys)
            assert len({key_slot(key) for key in keys}) == 1, (name, queue)
            assert not per_queue(source(name)) or name == "stats", name


def queues_on_each_master(cluster: Any, prefix: str, per_master: int = 1) -> list[str]:
    """Queue names chosen so that each master of ``cluster`` holds ``per_master`` of them."""
    wanted = {m.port: per_master for m in cluster.masters()}
    owners: dict[int, int] = {}
    for fields in cluster.nodes_text():
        if "master" in fields[2]:
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                if not part.startswith("["):
                    low, _, high = part.partition("-")
                    for slot in range(int(low), int(high or low) + 1):
                        owners[slot] = port
    found = []
    i = 0
    while any(wanted.values()):
        name = f"{prefix}{i}"
        port = owners[key_slot(name)]
        if wanted.get(port):
            wanted[port] -= 1
            found.append(name)
        i += 1
    return found


@pytest_twisted.ensureDeferred
async def test_queues_on_every_master_add_take_reserve_ack_and_list(cluster_engine, cluster):
    """Queues whose slots are on different masters all work, and listings and stats cover them all."""
    engine = cluster_engine
    names = queues_on_each_master(cluster, "q", 2)
    assert len(cluster_engine.redis.masters()) == 3
    for name in names:
        numbers = await engine.add(name, [(b'"a"', 0, 0, 0, None, False), (b'"b"', 0, 0, 0, None, False)])
        assert numbers == [1, 2]
    for name in names:
        [taken] = await engine.take(name, 1)
        assert taken.value == "a"
        [held] = await engine.reserve(name, 1, 30)
        assert await engine.ack(name, [held.receipt]) == 1
    assert await engine.queues() == sorted(names)
    stats = await engine.queues_stats(names)
    assert all(stats[n]["counters"]["added"] == 2 and stats[n]["counters"]["acked"] == 1 for n in names)


@pytest_twisted.ensureDeferred
async def test_an_expired_lease_comes_back_on_each_shard(cluster_engine, cluster):
    """A reservation whose lease ends comes back by itself on every master (the sweeper, no visitor)."""
    engine = cluster_engine
    names = queues_on_each_master(cluster, "lease")
    for name in names:
        await engine.add(name, [(b'"m"', 0, 0, 0, None, False)])
        assert len(await engine.reserve(name, 1, 0.2)) == 1
    for _ in range(50):
        await task.deferLater(reactor, 0.1, lambda: None)
        lengths = [await engine.length(n) for n in names]
        # the sweeper settles without a visitor: look at the raw sets, not through a settling script
        ready = [await engine.redis.execute_command(b"ZCARD", K.for_queue(n).ready) for n in names]
        if all(int(r) == 1 for r in ready):
            break
    assert all(int(r) == 1 for r in ready), ready
    assert all(length.reserved == 0 for length in lengths)


@pytest.mark.parametrize("frontend", ["dispatcher", "json-protocol", "xmlrpc", "line"])
@pytest_twisted.ensureDeferred
async def test_the_contract_holds_on_a_cluster(cluster_engine, cluster, frontend):
    """The contract scenario gives the same answers through every front end on a cluster, its
    queue on a different master for each front end."""
    from restmq.dispatch import Dispatcher
    from restmq.frontends.http.routes import build_site
    from restmq.frontends.line import LineFactory
    from tests import test_contract as contract

    dispatcher = Dispatcher(cluster_engine, max_message_size=1 << 20)
    site = reactor.listenTCP(0, build_site(dispatcher), interface="127.0.0.1")
    line = reactor.listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1")
    url = f"http://127.0.0.1:{site.getHost().port}"
    callers = {
        "dispatcher": lambda n, a: contract.via_dispatcher(dispatcher, n, a),
        "json-protocol": lambda n, a: contract.via_json_protocol(url, n, a),
        "xmlrpc": lambda n, a: contract.via_xmlrpc(url, n, a),
        "line": lambda n, a: contract.via_line(("127.0.0.1", line.getHost().port), n, a),
    }
    index = ["dispatcher", "json-protocol", "xmlrpc", "line"].index(frontend)
    queue = queues_on_each_master(cluster, f"contract-{frontend}-")[index % 3]
    contract.MEMO.clear()
    try:
        for step, (name, args, expected) in enumerate(contract.SCENARIO):
            outcome = await callers[frontend](name, contract.bind(args, queue))
            bound = contract.bind(expected, queue) if not callable(expected) else expected
            contract.check(step, bound, outcome, frontend)
    finally:
        await site.stopListening()
        await line.stopListening()
