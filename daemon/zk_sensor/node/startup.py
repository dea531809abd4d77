"""From the command line to a running node: settings from every source, the checks a
start makes before anything connects (exit 2 and one line for what restarting cannot fix),
and the operator's `--read-once` and `--check-config`, which touch no ZooKeeper."""

import argparse
import logging
import os
import signal
import sys

from zk_sensor.config.secrets import check_readable
from zk_sensor.config.sources import SettingsError
from zk_sensor.logs import setup_logging
from zk_sensor.node.daemon import Node
from zk_sensor.node.settings import TABLE, Settings, build_settings
from zk_sensor.node.systemd import Systemd
from zk_sensor.sensors import SensorError, open_sensor, read_once
from zk_sensor.sensors.base import min_read_time, period_too_short
from zk_sensor.sensors.catalog import sensor_warnings
from zk_sensor.zk.access import zk_access

log = logging.getLogger("zk_sensor")

# The calls one loop step may wait for in full before it gives up as a whole: the
# watchdog interval must cover them, however many calls a step makes.
STEP_DEADLINES = 3


def check_watchdog_budget(settings: Settings, systemd: Systemd) -> None:
    """A loop step may wait for ZooKeeper at most its budget (Node.step_budget: the
    watchdog interval less one deadline), whatever number of calls it makes, because the
    Zk wrapper cuts every call to what is left of it. The interval must leave room for
    STEP_DEADLINES full deadlines, or a step could rarely finish a call on a slow server."""
    interval = systemd.watchdog_interval
    if interval is not None and interval < STEP_DEADLINES * settings.zk_deadline:
        raise SettingsError(
            f"WatchdogSec is too short: half of it ({interval:.1f} s) must cover "
            f"{STEP_DEADLINES} ZooKeeper deadlines "
            f"({STEP_DEADLINES * settings.zk_deadline:.1f} s); lower zk_deadline or "
            "raise WatchdogSec"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = TABLE.parser("zk-sensor", "One sensor node of a ZooKeeper-coordinated fleet.")
    checks = parser.add_mutually_exclusive_group()
    checks.add_argument("--read-once", action="store_true",
                        help="open the sensor, print one reading and exit, without ZooKeeper: "
                             "0, or 1 with the reason (2: a bad setting, or the sensor's "
                             "library or device missing)")
    checks.add_argument("--check-config", action="store_true",
                        help="check the settings and exit, touching neither ZooKeeper nor the "
                             "sensor: 0 and `ok` (after warnings the node would start with, "
                             "such as a w1_device not there yet), or 2 with the reason")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    systemd = Systemd()
    try:
        settings = build_settings(TABLE.from_args(args), os.environ, args.config)
        check_watchdog_budget(settings, systemd)
        access = zk_access(settings.zk_auth_file, settings.zk_ca_file, settings.zk_cert_file,
                           settings.zk_key_file)
        if settings.collector_ca_file:
            check_readable(settings.collector_ca_file, "collector_ca_file")
    except SettingsError as error:
        print(f"zk-sensor: {error}", file=sys.stderr)
        return 2
    if args.check_config:
        for warning in sensor_warnings(settings):
            print(f"zk-sensor: warning: {warning}", file=sys.stderr)
        print("ok")
        return 0
    if args.read_once:
        try:
            print(read_once(settings))
        except SensorError as error:
            print(f"zk-sensor: {error}", file=sys.stderr)
            return error.exit_status
        return 0
    setup_logging(f"node {settings.node_id}", settings.log_level)
    try:
        sensor = open_sensor(settings)
    except SensorError as error:
        log.error("%s", error)
        return error.exit_status
    too_short = period_too_short(sensor.name, settings.sampling_period, min_read_time(sensor))
    if too_short:
        log.error("%s", too_short)
        sensor.close()
        return 2
    node = Node(settings, sensor, systemd, access)
    signal.signal(signal.SIGTERM, node.request_stop)
    signal.signal(signal.SIGINT, node.request_stop)
    log.info("starting: sensor %s, ZooKeeper %s (%s), namespace %s",
             sensor.name, settings.zookeeper, access.describe(), settings.namespace)
    return node.run()


if __name__ == "__main__":
    sys.exit(main())
