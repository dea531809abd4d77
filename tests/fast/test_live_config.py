"""Live config (fleet/config_watch.py) through watch_data: every change reaches the node,
garbage keeps the last good value."""

from zk_sensor.fleet.config_watch import LiveConfig, watch_config
from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.memory import MemoryZk

DEFAULTS = {"sampling_period": 5.0, "api_url": "http://127.0.0.1:8080/nuevo"}


def test_a_config_change_takes_effect_and_garbage_keeps_the_last_good_value(
        zk: MemoryZk, admin: MemoryZk, layout: Layout, caplog) -> None:
    admin.ensure_path(layout.config)
    config = LiveConfig(DEFAULTS)
    handles = watch_config(zk, layout, config.apply)
    assert config.sampling_period == 5.0
    admin.create(layout.config_key("sampling_period"), b"2")
    assert config.sampling_period == 2.0
    admin.set(layout.config_key("sampling_period"), b"fast please")
    assert config.sampling_period == 2.0 and "config refused" in caplog.text
    admin.create(layout.config_key("api_url"), b"http://collector:9000/api/rounds")
    assert config.api_url == "http://collector:9000/api/rounds"
    admin.delete(layout.config_key("sampling_period"))
    assert config.sampling_period == 5.0, "back to the local default"
    assert len(handles) == 2
