"""Live config through ZooKeeper: the CLI validates before writing, nodes validate again."""

import itertools
import statistics

from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.validation import InvalidValue, parse_api_url, parse_sampling_period
from zk_sensor.testing.fleet import Fleet, Receiver, ctl, status, wait_for


def gaps(deliveries: list) -> list[float]:
    times = [d.received_at for d in deliveries]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_config_set_applies_live_without_restart(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1", "2")
    receiver.wait_rounds(4)
    result = ctl(fleet, "config", "set", "sampling_period", "1.5")
    assert result.returncode == 0, result.stderr
    for daemon in fleet.daemons.values():
        daemon.wait_log(r"config sampling_period = 1.5 \(was 0.5\)")
    changed_at = receiver.snapshot()[-1].received_at
    slower = receiver.wait_rounds(4, after=changed_at, timeout=20)
    assert statistics.median(gaps(slower)) > 1.2

    new_url = receiver.url("/elsewhere")
    assert ctl(fleet, "config", "set", "api_url", new_url).returncode == 0
    wait_for(lambda: [d for d in receiver.snapshot() if d.path == "/elsewhere"], 10,
             "a delivery to the new api_url")
    assert ctl(fleet, "config", "get", "sampling_period").stdout.strip() == "sampling_period = 1.5"
    assert all(d.running for d in fleet.daemons.values())


def test_cli_refuses_invalid_values_and_writes_nothing(fleet: Fleet, make_zk) -> None:
    zk = make_zk(fleet.hosts)
    layout = Layout(fleet.namespace)
    assert ctl(fleet, "config", "set", "sampling_period", "6").returncode == 0
    for key, value in [("sampling_period", "abc"), ("sampling_period", "0"),
                       ("sampling_period", "-3"), ("sampling_period", "1e9"),
                       ("sampling_period", "nan"), ("api_url", "ftp://x/nuevo"),
                       ("api_url", "not a url")]:
        result = ctl(fleet, "config", "set", key, value)
        assert result.returncode == 2, (key, value)
        assert len(result.stderr.strip().splitlines()) == 1
        assert "refused" in result.stderr
    assert zk.get(layout.config_key("sampling_period"))[0] == b"6"
    assert zk.exists(layout.config_key("api_url")) is None


def test_raw_garbage_write_is_refused_by_every_node(fleet: Fleet, receiver: Receiver,
                                                     make_zk) -> None:
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(2)
    zk = make_zk(fleet.hosts)
    zk.ensure_path(Layout(fleet.namespace).config)
    zk.create(Layout(fleet.namespace).config_key("sampling_period"), b"soon")
    for daemon in fleet.daemons.values():
        log = daemon.wait_log(r"config refused: sampling_period 'soon' is not a number; "
                              r"keeping sampling_period = 0.5")
        assert log.count("config refused") == 1
    written_at = receiver.snapshot()[-1].received_at
    after = receiver.wait_rounds(4, after=written_at)
    assert statistics.median(gaps(after)) < 1.0
    listed = status(fleet)["config"]["sampling_period"]
    assert listed["value"] == "soon" and "invalid" in listed["error"]
    assert all(d.running for d in fleet.daemons.values())


def test_a_huge_config_value_is_refused_in_one_short_line() -> None:
    """A znode holds up to 1 MiB: the refusal quotes the value cut, not whole."""
    for parse, value in ((parse_api_url, "http://x/" + "a" * 1_000_000),
                         (parse_sampling_period, "5" * 1_000_000)):
        try:
            parse(value)
        except InvalidValue as refusal:
            assert len(str(refusal)) < 200 and "1000" in str(refusal)
        else:
            raise AssertionError(f"{parse.__name__} took a 1 MB value")
