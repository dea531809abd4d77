"""Pure logic, no ZooKeeper: validation, settings, aggregation, payloads, drivers."""

import math
import tracemalloc

import pytest

from zk_sensor.fleet.aggregate import aggregate
from zk_sensor.fleet.barrier import BarrierState, decode_barrier, encode_barrier, next_round
from zk_sensor.fleet.counter import parse_count
from zk_sensor.fleet.election import candidate_prefix, is_candidate_of, sequence_of
from zk_sensor.fleet.readings import decode_reading, encode_reading
from zk_sensor.fleet.validation import (
    InvalidValue,
    format_config_value,
    parse_api_url,
    parse_sampling_period,
)
from zk_sensor.node.collectors import Collectors, try_elsewhere
from zk_sensor.node.delivery import build_request
from zk_sensor.node.leader import describe_change
from zk_sensor.node.schedule import RoundClock
from zk_sensor.node.settings import SettingsError, build_settings
from zk_sensor.node.systemd import watchdog_interval
from zk_sensor.sensors import (
    SIMULATED_HIGH,
    SIMULATED_LOW,
    SensorError,
    SimulatedSensor,
    take_reading,
)


@pytest.mark.parametrize("text", ["abc", "", "0", "-1", "nan", "inf", "1e9", "0.01"])
def test_bad_periods_are_refused(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_sampling_period(text)


def test_good_period_is_stored_as_plain_text() -> None:
    assert format_config_value(parse_sampling_period(" 6 ")) == "6"
    assert format_config_value(parse_sampling_period("2.5")) == "2.5"


@pytest.mark.parametrize("url", ["ftp://h/x", "localhost:8080/nuevo", "http://", "http://h:0/",
                                 "http://h:99999/", "http://h/a b", "http://a/x, ftp://b/x",
                                 "http://a/x,", ",http://a/x", "http://a/x,,http://b/x",
                                 "http://a/x, http://a/x", ",".join(["http://a/x"] * 17)])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidValue):
        parse_api_url(url)


def test_command_line_beats_environment_beats_file(tmp_path) -> None:
    config = tmp_path / "zk-sensor.toml"
    config.write_text('id = "7"\nzookeeper = "file:1"\nsensor = "loadavg"\nsampling_period = 3\n')
    env = {"ZK_SENSOR_ZOOKEEPER": "env:2", "ZK_SENSOR_SAMPLING_PERIOD": "4"}
    settings = build_settings({"sampling_period": 9.0}, env, str(config))
    assert (settings.node_id, settings.zookeeper, settings.sensor) == ("7", "env:2", "loadavg")
    assert settings.sampling_period == 9.0
    assert settings.namespace == "/zk-sensor"
    assert settings.api_url == "http://127.0.0.1:8080/nuevo"


@pytest.mark.parametrize("cli", [{}, {"node_id": "a b"}, {"node_id": "1", "sensor": "x"},
                                 {"node_id": "1", "zk_deadline": 9.0},
                                 {"node_id": "1", "namespace": "zk"}])
def test_bad_settings_stop_the_start(cli: dict) -> None:
    with pytest.raises(SettingsError):
        build_settings(cli, {}, None)


def test_unknown_setting_in_file_is_named(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("id = 1\nperiod = 3\n")
    with pytest.raises(SettingsError, match="period"):
        build_settings({}, {}, str(config))


def test_aggregate_mean_min_max() -> None:
    result = aggregate([70.0, 80.0, 96.0], round_number=4, epoch=2, leader="a", now=1.0)
    assert result is not None
    assert (result.mean, result.count, result.min, result.max) == (82.0, 3, 70.0, 96.0)
    assert aggregate([], round_number=1, epoch=1, leader="a", now=1.0) is None


def test_reading_payload_round_trip_and_garbage() -> None:
    reading = decode_reading("n", encode_reading(80.5, 100.0, 3, 7))
    assert (reading.value, reading.taken_at, reading.round) == (80.5, 100.0, 3)
    for junk in [b"\xff", b"{}", b"[]", b'{"value": "x", "taken_at": 1, "round": 1}',
                 b'{"value": NaN, "taken_at": 1, "round": 1}']:
        with pytest.raises(ValueError):
            decode_reading("n", junk)


def test_barrier_payload_carries_the_last_aggregate() -> None:
    last = aggregate([1.0, 3.0], round_number=5, epoch=2, leader="b", now=9.0)
    state = next_round(BarrierState(round=5), epoch=2, leader="b", now=10.0, last=last)
    decoded = decode_barrier(encode_barrier(state))
    assert decoded == state and decoded.round == 6 and decoded.last["mean"] == 2.0
    assert decode_barrier(b"garbage") is None and decode_barrier(None) is None


def test_seed_url_gets_dato_with_the_round_key_and_others_get_json() -> None:
    result = aggregate([80.0, 81.0], round_number=1, epoch=2, leader="a", now=1.0,
                       incarnation="abc123")
    seed = build_request(result, "http://h:8080/nuevo", "/zk-sensor")
    assert (seed.method, seed.headers) == ("GET", {})
    assert seed.params == {"dato": "80.5", "round": "1", "epoch": "2", "fleet": "/zk-sensor",
                           "incarnation": "abc123"}
    rich = build_request(result, "http://h:8080/api/rounds", "/zk-sensor", "s3cret")
    assert rich.method == "POST" and rich.json["round"] == 1 and rich.json["count"] == 2
    assert rich.json["fleet"] == "/zk-sensor" and rich.json["incarnation"] == "abc123"
    assert rich.headers == {"Authorization": "Bearer s3cret"}


def test_counter_shard_garbage_counts_as_zero() -> None:
    assert parse_count(b"12") == 12
    assert parse_count(b"x") == 0 and parse_count(b"-5") == 0


def test_device_change_is_described() -> None:
    assert describe_change(None, ["1"]) == ""
    assert describe_change(["1", "2"], ["2", "3"]) == " (joined: 3; left: 1)"


def test_watchdog_interval_is_half_and_only_for_us() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "8000000"}
    assert watchdog_interval(env, 10) == 4.0
    assert watchdog_interval({**env, "WATCHDOG_PID": "11"}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "8000000"}, 10) is None


def test_simulated_sensor_reads_through_gpiozero_in_the_seed_range() -> None:
    sensor = SimulatedSensor(seed=1)
    try:
        values = [take_reading(sensor) for _ in range(50)]
    finally:
        sensor.close()
    assert all(SIMULATED_LOW <= value <= SIMULATED_HIGH for value in values)
    assert len(set(values)) > 10


class Broken:
    name = "broken"

    def __init__(self, value: object) -> None:
        self.value = value

    def read(self) -> float:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value  # type: ignore[return-value]

    def close(self) -> None:
        return None


@pytest.mark.parametrize("value", [math.nan, math.inf, OSError("spi"), "x"])
def test_failed_or_non_finite_readings_raise_sensor_error(value: object) -> None:
    with pytest.raises(SensorError):
        take_reading(Broken(value))


def test_rounds_close_on_a_fixed_grid_whatever_the_leader_spends() -> None:
    clock = RoundClock(next_close=10.0, period=1.0)
    assert not clock.due(9.99) and clock.due(10.0)
    assert clock.advance(now=10.3) == 0 and clock.next_close == 11.0
    assert clock.advance(now=11.9) == 0 and clock.next_close == 12.0


def test_a_leader_that_falls_behind_skips_slots_instead_of_bunching_rounds() -> None:
    clock = RoundClock(next_close=10.0, period=1.0)
    assert clock.advance(now=12.5) == 2 and clock.next_close == 13.0


def test_a_new_period_reanchors_the_grid_no_later_than_one_new_period() -> None:
    clock = RoundClock(next_close=15.0, period=5.0)
    clock.retime(1.0, now=11.0)
    assert clock.next_close == 12.0 and clock.period == 1.0
    clock.retime(5.0, now=11.5)
    assert clock.next_close == 12.0
    clock.advance(now=12.0)
    assert clock.next_close == 17.0


def test_candidate_names_carry_the_node_id() -> None:
    assert is_candidate_of(f"{candidate_prefix('a_1')}0000000042", "a_1")
    assert not is_candidate_of(f"{candidate_prefix('a_1')}0000000042", "a")
    assert not is_candidate_of("n_0000000042", "a")
    assert sequence_of(f"{candidate_prefix('a_1')}0000000042") == 42


def test_a_reading_carries_its_node_count_and_old_readings_count_zero() -> None:
    assert decode_reading("n", encode_reading(80.0, 1.0, 2, 7)).count == 7
    assert decode_reading("n", b'{"value": 1, "taken_at": 1, "round": 1}').count == 0
    with pytest.raises(ValueError):
        decode_reading("n", b'{"value": 1, "taken_at": 1, "round": 1e400}')


def test_the_simulated_sensor_grows_no_memory_as_it_reads() -> None:
    """gpiozero's mock pins record every change: a simulated chip on them grew a node by
    6 KB a reading. On the hardware SPI port the chip has no pins to remember."""
    sensor = SimulatedSensor(seed=1)
    try:
        for _ in range(100):
            sensor.read()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(2000):
            sensor.read()
        grown = sum(stat.size_diff for stat in
                    tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
    finally:
        sensor.close()
    assert grown < 64 * 1024, f"{grown} bytes more after 2,000 readings"


def test_an_api_url_list_is_stored_without_the_space_around_its_entries() -> None:
    value = parse_api_url(" http://a:8080/api/rounds ,https://b/api/rounds ")
    assert value == "http://a:8080/api/rounds,https://b/api/rounds"
    assert parse_api_url("http://a/nuevo") == "http://a/nuevo"


def test_a_refused_list_names_its_bad_entry_on_one_line() -> None:
    with pytest.raises(InvalidValue) as refused:
        parse_api_url("http://a/x, ftp://b/x")
    assert str(refused.value) == "api_url 'ftp://b/x' must start with http:// or https://"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


URLS = ("http://a/r", "http://b/r", "http://c/r")


def test_rounds_stick_to_the_collector_that_answered_last() -> None:
    collectors = Collectors(clock=Clock())
    assert collectors.order(URLS) == list(URLS)
    assert collectors.answered("http://b/r") is None, "the first answer is no switch"
    assert collectors.order(URLS) == ["http://b/r", "http://c/r", "http://a/r"]
    assert collectors.answered("http://b/r") is None


def test_a_failed_collector_rests_behind_the_others_and_one_line_names_the_switch() -> None:
    clock = Clock()
    collectors = Collectors(clock=clock)
    collectors.answered("http://a/r")
    collectors.failed("http://a/r", "ConnectionRefusedError: Connection refused")
    assert collectors.order(URLS) == ["http://b/r", "http://c/r", "http://a/r"]
    assert collectors.answered("http://b/r") == (
        "delivering to http://b/r (http://a/r failed: ConnectionRefusedError: "
        "Connection refused)")
    clock.now += 1
    collectors.failed("http://b/r", "HTTP 503")
    assert collectors.order(URLS) == ["http://c/r", "http://a/r", "http://b/r"]
    clock.now += 30
    assert collectors.order(URLS) == ["http://b/r", "http://c/r", "http://a/r"]


def test_a_collector_dropped_from_the_list_is_left_with_one_line() -> None:
    collectors = Collectors(clock=Clock())
    collectors.answered("http://a/r")
    assert collectors.order(URLS[1:]) == ["http://b/r", "http://c/r"]
    assert collectors.answered("http://c/r") == "delivering to http://c/r (http://a/r left api_url)"


@pytest.mark.parametrize(("status", "elsewhere"), [
    (500, True), (502, True), (503, True), (429, True),
    (200, False), (201, False), (409, False), (400, False), (401, False), (403, False),
    (404, False), (422, False), (302, False),
])
def test_only_answers_that_stored_nothing_move_a_round_to_another_collector(
        status: int, elsewhere: bool) -> None:
    assert try_elsewhere(status) is elsewhere
