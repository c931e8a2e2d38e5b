"""The front-end registry: each option is declared once and reaches --help, RESTMQ_* and the service."""

from __future__ import annotations

import subprocess
import sys

import pytest

from restmq.config import Config, core_options
from restmq.frontends.registry import MODULES, frontend_options, frontends
from restmq.tap import ALIASES, argv_from_env, declared_options, parse


def test_every_registered_module_declares_its_front_end() -> None:
    """Each module in the registry ends with a FRONTEND whose first option is its endpoint, named like it."""
    assert len(frontends()) == len(MODULES)
    for module, fe in zip(MODULES, frontends()):
        assert fe.endpoint.name == fe.name, module
        assert callable(fe.build)


def test_no_option_is_declared_twice() -> None:
    """Front ends, the core and the original aliases never declare the same option name."""
    names = [o.name for o in declared_options()]
    assert len(names) == len(set(names))


def test_serve_help_lists_every_declared_option() -> None:
    """`restmq serve --help` shows every declared option with its help text."""
    shown = subprocess.run(
        [sys.executable, "-m", "restmq.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for option in declared_options():
        assert f"--{option.name}" in shown, option.name
        assert option.help.split()[0] in shown, option.name


def test_every_declared_option_has_its_restmq_variable() -> None:
    """RESTMQ_<NAME> sets each declared option of the tac, flags with 1/yes."""
    environ = {o.env: ("yes" if o.flag else "value") for o in declared_options()}
    argv = argv_from_env(environ)
    for option in declared_options():
        assert f"--{option.name}" in argv, option.env


@pytest.mark.parametrize("option", [o for o in frontend_options() if o.name in {fe.name for fe in frontends()}],
                         ids=lambda o: o.name)
def test_each_endpoint_option_reaches_the_config(option) -> None:
    """A front end's endpoint given on the command line is the listener the config asks for."""
    endpoint = "tcp:0:interface=127.0.0.1"
    config = parse([f"--{option.name}", endpoint])
    assert config.endpoints[option.name] == endpoint
    assert getattr(config, option.attr) == endpoint


def test_config_knows_core_and_front_end_options_and_nothing_else() -> None:
    """Config takes every declared option as a keyword and refuses an unknown one."""
    defaults = Config()
    for option in (*core_options(), *frontend_options()):
        assert getattr(defaults, option.attr) == option.default
    with pytest.raises(TypeError, match="no option"):
        Config(gopher="tcp:70")
    assert {o.name for o in ALIASES} == {"port", "listen", "redis-host", "redis-port", "redis-db"}
