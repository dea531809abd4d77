"""Settings declared once: every program's flags, environment variables and TOML keys come
from its table, in one layering that remembers what an operator set; and the deadlines
left at their default follow the session a real server grants."""

import argparse
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zk_sensor.collector.settings import TABLE as COLLECTOR
from zk_sensor.collector.settings import build_parser as collector_parser
from zk_sensor.collector.settings import build_settings as collector_settings
from zk_sensor.config.sources import SettingsError, layered
from zk_sensor.config.table import Spec, Table, number, optional_number, switch, whole
from zk_sensor.ctl.cli import build_parser as ctl_parser
from zk_sensor.ctl.cli import node_settings
from zk_sensor.ctl.exporter import build_parser as exporter_parser
from zk_sensor.node.daemon import Node
from zk_sensor.node.settings import TABLE as NODE
from zk_sensor.node.settings import Settings, build_settings
from zk_sensor.node.startup import build_parser as node_parser
from zk_sensor.node.systemd import Systemd
from zk_sensor.sensors import open_sensor
from zk_sensor.testing.fleet import BIN, Daemon, Receiver
from zk_sensor.testing.zookeeper import ZkEnsemble

# The flags of each program before the tables, as operators' scripts and units spell them.
NODE_FLAGS = {
    "--config", "--id", "--zookeeper", "--namespace", "--sampling-period", "--api-url",
    "--sensor", "--sensor-channel", "--sensor-scale", "--sensor-offset", "--pin-factory",
    "--disk-path", "--sensor-differential", "--no-sensor-differential", "--sensor-vref",
    "--sensor-pin", "--sensor-trigger-pin", "--sensor-echo-pin", "--sensor-file",
    "--w1-device", "--sensor-min", "--sensor-max", "--session-timeout", "--zk-deadline",
    "--http-timeout", "--metrics-port", "--metrics-host", "--outbox-limit", "--zk-auth-file",
    "--zk-ca-file", "--zk-cert-file", "--zk-key-file", "--collector-ca-file",
    "--api-token-origins", "--log-level", "--read-once", "--check-config",
}
COLLECTOR_FLAGS = {
    "--config", "--listen", "--db", "--database", "--token-file", "--tokens-file",
    "--insecure-open-writes", "--seed-get-writes", "--fleets", "--fence-zookeeper",
    "--fence-zk-ca-file", "--fence-zk-cert-file", "--fence-zk-key-file", "--cert-file",
    "--key-file", "--threads", "--log-level", "--retention",
}
ACCESS_FLAGS = {"--zk-auth-file", "--zk-ca-file", "--zk-cert-file", "--zk-key-file"}
CTL_FLAGS = {"-c", "--config", "--zookeeper", "--namespace", *ACCESS_FLAGS}
EXPORTER_FLAGS = {"-c", "--config", "--zookeeper", "--listen", *ACCESS_FLAGS}
PROGRAMS = [(NODE, node_parser, NODE_FLAGS), (COLLECTOR, collector_parser, COLLECTOR_FLAGS)]


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def sample(spec: Spec) -> tuple[str, Any]:
    """A value an operator could write for the setting, and what it stands for."""
    if spec.about.choices:
        return spec.about.choices[-1], spec.about.choices[-1]
    return {whole: ("7", 7), number: ("1.5", 1.5), switch: ("yes", True),
            optional_number: ("2.5", 2.5)}.get(spec.about.parse, ("x", "x"))


def test_todays_flags_are_all_still_there() -> None:
    for parser, expected in ((node_parser(), NODE_FLAGS), (collector_parser(), COLLECTOR_FLAGS),
                             (ctl_parser(), CTL_FLAGS), (exporter_parser(), EXPORTER_FLAGS)):
        assert expected <= flags(parser), expected - flags(parser)


@pytest.mark.parametrize(("table", "build", "_flags"), PROGRAMS)
def test_every_setting_but_a_secret_is_a_flag_saying_its_default(
        table: Table[Any], build: Any, _flags: set[str]) -> None:
    parser = build()
    helped = {option: action.help for action in parser._actions
              for option in action.option_strings}
    for spec in table:
        if spec.about.secret:
            assert spec.flag is None and spec.name in parser.epilog
            assert table.env_names(spec)[0] in parser.epilog
            continue
        assert spec.flag is not None
        assert "(default: " in helped[spec.flag], spec.name
        assert len(spec.about.help) > 10, spec.name


@pytest.mark.parametrize(("table", "build", "_flags"), PROGRAMS)
def test_each_source_sets_each_setting_and_is_remembered(
        tmp_path: Path, table: Table[Any], build: Any, _flags: set[str]) -> None:
    specs = list(table)
    file_part, env_part, flag_part = specs[0::3], specs[1::3], specs[2::3]
    config = tmp_path / "settings.toml"
    config.write_text("".join(f"{spec.name} = {sample(spec)[0]!r}\n".replace("'", '"')
                              for spec in file_part))
    env = {table.env_names(spec)[0]: sample(spec)[0] for spec in env_part}
    argv = []
    for spec in flag_part:
        if spec.flag is None:
            env[table.env_names(spec)[0]] = sample(spec)[0]
        elif spec.about.parse is switch:
            argv.append(spec.flag)
        else:
            argv += [spec.flag, sample(spec)[0]]
    merged = layered(table, table.from_args(build().parse_args(argv)), env, str(config))
    for spec in specs:
        assert getattr(merged.settings, spec.name) == sample(spec)[1], spec.name
    assert merged.explicit == {spec.name for spec in specs}
    assert merged.origins[file_part[0].name] == f"in {config}"
    assert merged.origins[env_part[0].name] == f"from {table.env_names(env_part[0])[0]}"
    assert merged.origins[flag_part[0].name] == f"from {flag_part[0].flag}"
    untouched = layered(table, {}, {}, None)
    assert untouched.explicit == frozenset() and untouched.settings == table.cls()


def test_later_sources_win_and_the_old_names_still_work(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('id = "7"\nzookeeper = "file:1"\nlog_level = "error"\n')
    env = {"ZK_SENSOR_ID": "8", "ZK_SENSOR_ZOOKEEPER": "env:2"}
    args = node_parser().parse_args(["--zookeeper", "flag:3", "--no-sensor-differential"])
    merged = layered(NODE, NODE.from_args(args), env, str(config))
    assert (merged.settings.node_id, merged.settings.zookeeper) == ("8", "flag:3")
    assert merged.origins == {"node_id": "from ZK_SENSOR_ID", "zookeeper": "from --zookeeper",
                              "log_level": f"in {config}",
                              "sensor_differential": "from --sensor-differential"}
    via_config_variable = layered(NODE, {}, {"ZK_SENSOR_CONFIG": str(config)}, None)
    assert via_config_variable.settings.node_id == "7"


@pytest.mark.parametrize(("cli", "env", "text", "complaint"), [
    ({"zk_deadline": "soon"}, {}, "",
     "setting zk_deadline='soon' is not a number (from --zk-deadline)"),
    ({}, {"ZK_SENSOR_OUTBOX_LIMIT": "2.5"}, "",
     "setting outbox_limit='2.5' is not a whole number (from ZK_SENSOR_OUTBOX_LIMIT)"),
    ({}, {}, 'log_level = "loud"\n',
     "setting log_level='loud' is not one of debug, info, warning, error (in "),
    ({}, {}, "sensor_scale = nan\n", "setting sensor_scale=nan is not a finite number (in "),
    ({}, {"ZK_SENSOR_SAMPLING_PERIDO": "3"}, "",
     "unknown setting 'sampling_perido' from ZK_SENSOR_SAMPLING_PERIDO"),
])
def test_a_bad_value_is_one_line_naming_the_setting_and_its_source(
        tmp_path: Path, cli: dict[str, str], env: dict[str, str], text: str,
        complaint: str) -> None:
    config = tmp_path / "node.toml"
    config.write_text('id = "1"\n' + text)
    with pytest.raises(SettingsError) as refused:
        build_settings(cli, env, str(config))
    assert complaint in str(refused.value) and "\n" not in str(refused.value)


def test_the_collector_refuses_a_bad_variable_with_one_line_and_exit_2() -> None:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith("ZK_COLLECTOR_")}
    result = subprocess.run([str(BIN / "zk-collector"), "--listen", "127.0.0.1:0"],
                            env={**clean, "ZK_COLLECTOR_THREADS": "many"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == ("zk-collector: setting threads='many' is not a whole number "
                             "(from ZK_COLLECTOR_THREADS)\n")


def test_a_collector_flag_overrides_a_switch_its_file_turned_on(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text("insecure_open_writes = true\nthreads = 4\n")
    args = collector_parser().parse_args(["--no-insecure-open-writes"])
    settings = collector_settings(COLLECTOR.from_args(args), {"ZK_COLLECTOR_THREADS": "5"},
                                  str(config))
    assert (settings.insecure_open_writes, settings.threads) == (False, 5)


def test_zk_sensorctl_reads_only_what_it_needs_from_a_node_file(tmp_path: Path,
                                                                 monkeypatch: Any) -> None:
    for key in [key for key in os.environ if key.startswith("ZK_SENSOR_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "node.toml"
    config.write_text('id = "3"\nzookeeper = "file:1"\nsensor_min = "low"\n'
                      "outbox_limit = 40\n")
    monkeypatch.setenv("ZK_SENSOR_NAMESPACE", "/env")
    node = node_settings(ctl_parser().parse_args(["-c", str(config), "status"]))
    assert (node.zookeeper, node.namespace, node.outbox_limit, node.sensor_min) == \
        ("file:1", "/env", 40, None)
    config.write_text('zookeepr = "file:1"\n')
    with pytest.raises(SettingsError, match="unknown setting 'zookeepr' in "):
        node_settings(ctl_parser().parse_args(["-c", str(config), "status"]))


def test_deadlines_left_at_their_default_fit_the_session_and_chosen_ones_do_not() -> None:
    short = build_settings({"node_id": "1", "session_timeout": "4"}, {}, None)
    assert (short.zk_deadline, short.http_timeout) == (1.333, 1.333)
    assert short.defaulted == {"zk_deadline", "http_timeout"}
    roomy, note = short.fitted_to(30.0)
    assert (roomy.zk_deadline, roomy.http_timeout) == (2.0, 3.0)
    assert note == ("defaults follow it: zk_deadline 2 s (was 1.333 s), "
                    "http_timeout 3 s (was 1.333 s)")
    assert roomy.fitted_to(30.0) == (roomy, "")
    chosen = build_settings({"node_id": "1", "zk_deadline": "2"}, {}, None)
    assert chosen.fitted_to(4.0)[0].zk_deadline == 2.0
    with pytest.raises(SettingsError, match=r"zk_deadline 2 s must be positive and at most "
                                            r"a third of session_timeout \(4 s\)"):
        build_settings({"node_id": "1", "session_timeout": "4", "zk_deadline": "2"}, {}, None)
    built_in_code = Settings(node_id="1")
    assert built_in_code.fitted_to(4.0) == (built_in_code, "")


# --- against a real server that grants short sessions -----------------------------------

SHORT_TICK_MS = 200  # sessions of 0.4 to 4 s


@pytest.fixture
def short_tick_server(tmp_path: Path) -> Iterator[str]:
    ensemble = ZkEnsemble(tmp_path / "short-tick", n=1, tick_ms=SHORT_TICK_MS)
    ensemble.start()
    try:
        ensemble.wait_serving()
        yield ensemble.hosts
    finally:
        ensemble.stop()


def start_node(work: Path, hosts: str, api_url: str, node_id: str, *extra: str) -> Daemon:
    """zk-sensor with its default timing, unlike testing.fleet's, which sets it."""
    log_file = work / f"node-{node_id}.log"
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ZK_SENSOR_")}
    with log_file.open("wb") as sink:
        process = subprocess.Popen(
            [str(BIN / "zk-sensor"), "--id", node_id, "--zookeeper", hosts,
             "--sampling-period", "0.5", "--api-url", api_url, *extra],
            stdout=sink, stderr=subprocess.STDOUT, env=clean)
    return Daemon(node_id, process, log_file)


def test_a_node_with_default_timing_follows_a_short_granted_session(
        short_tick_server: str, tmp_path: Path, receiver: Receiver) -> None:
    node = start_node(tmp_path, short_tick_server, receiver.url("/rounds"), "1")
    try:
        node.wait_log(r"timeout 4\.0 s negotiated, 10\.0 s asked")
        log = node.wait_log(r"node 1: the server granted a session timeout of 4\.0 s; "
                            r"defaults follow it: zk_deadline 1\.333 s \(was 2 s\), "
                            r"http_timeout 1\.333 s \(was 3 s\)")
        assert log.count("defaults follow it") == 1
        receiver.wait_rounds(3)
        assert node.running
        for name, flag, value, complaint in (
                ("2", "--zk-deadline", "2", "zk_deadline 2 s must be at most a third of it"),
                ("3", "--http-timeout", "3", "http_timeout 3 s must be under half of it")):
            refused = start_node(tmp_path, short_tick_server, receiver.url("/rounds"), name,
                                 flag, value)
            assert refused.wait_exit(30) == 2
            errors = [line for line in refused.log().splitlines() if " ERROR " in line]
            assert len(errors) == 1, refused.log()
            assert re.search(rf"node {name}: the server negotiated a session timeout of "
                             rf"4\.0 s: {complaint}", errors[0]), errors[0]
        assert node.running
    finally:
        node.signal(signal.SIGTERM)
        assert node.wait_exit(15) == 0


def test_what_took_the_default_deadlines_at_start_follows_the_granted_session() -> None:
    settings = build_settings({"node_id": "1"}, {}, None)
    node = Node(settings, open_sensor(settings), Systemd())
    try:
        node.zk.negotiated = 4.0
        hold_for = node.handover.hold_for
        assert node.adopt_negotiated_timeout()
        assert (node.zk.deadline, node.courier.sender.timeout) == (1.333, 1.333)
        assert node.handover.hold_for == pytest.approx(hold_for - 3 + 1.333)
        assert node.settings == settings.fitted_to(4.0)[0]
        assert node.leader.lease.length == 2.0
    finally:
        node.sensor.close()
