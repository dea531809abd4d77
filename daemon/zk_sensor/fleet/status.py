"""The fleet as ZooKeeper holds it, read without writing anything: what `zk-sensorctl
status` shows (ctl/status.py renders it), `status --json` prints and `check` judges."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zk_sensor.fleet.counter import fleet_total
from zk_sensor.fleet.election import current_leader, live_nodes
from zk_sensor.fleet.layout import CONFIG_KEYS, Layout
from zk_sensor.fleet.outbox import load_outbox
from zk_sensor.fleet.payloads import (
    Aggregate,
    BarrierState,
    EpochRecord,
    Garbage,
    Incarnation,
    epoch_holder,
)
from zk_sensor.fleet.readings import collect_readings
from zk_sensor.fleet.validation import CONFIG_PARSERS, InvalidValue
from zk_sensor.zk.errors import AccessRefused, NoNodeError
from zk_sensor.zk.interface import Zk


@dataclass(frozen=True)
class ConfigEntry:
    """One live config key as ZooKeeper holds it: its text (None if unset or unreadable)
    and why nodes do not use it (None if they do)."""

    value: str | None
    error: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"value": self.value, "error": self.error}


@dataclass(frozen=True)
class DeviceStatus:
    """A device's last reading as `status` shows it: `age` in seconds (meaningless when its
    clock is unsynced), `live` while its node stands as a candidate (a gone node's
    reading stays: it carries the node's count)."""

    node: str
    value: float = 0.0
    age: float = 0.0
    round: int = 0
    failures: int = 0
    clock_synced: bool = True
    live: bool = True

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "value": self.value, "age": self.age, "round": self.round,
                "failures": self.failures, "clock": clock_label(self.clock_synced),
                "live": self.live}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> "DeviceStatus":
        return cls(node=entry["node"], value=entry.get("value", 0.0),
                   age=entry.get("age", 0.0), round=entry.get("round", 0),
                   failures=entry.get("failures", 0),
                   clock_synced=entry.get("clock", "synced") != "unsynced",
                   live=entry.get("live", True))


@dataclass(frozen=True)
class OutboxStatus:
    """The outbox as `status` shows it: rounds waiting for the collector (and the oldest),
    the counts, and entries that are no round (listed, not counted: the next leader
    removes them)."""

    pending: int = 0
    oldest: int | None = None
    dropped: int = 0
    rejected: int = 0
    garbage: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"pending": self.pending, "oldest": self.oldest, "dropped": self.dropped,
                "rejected": self.rejected, "garbage": list(self.garbage)}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> "OutboxStatus":
        return cls(pending=entry.get("pending", 0), oldest=entry.get("oldest"),
                   dropped=entry.get("dropped", 0), rejected=entry.get("rejected", 0),
                   garbage=tuple(entry.get("garbage", ())))


@dataclass(frozen=True)
class FleetStatus:
    """The fleet as ZooKeeper holds it, read without writing anything: what `status`
    renders, `status --json` prints (`as_json`, its keys a stable interface) and `check`
    judges. None where a znode is missing or holds garbage (`garbage_znodes` names the
    latter); `leader` is the first in line only once it holds the epoch."""

    namespace: str = ""
    incarnation: str | None = None
    leader: str | None = None
    first_in_line: str | None = None
    epoch: int | None = None
    round: int | None = None
    round_released_at: float | None = None
    round_clock_synced: bool | None = None
    round_changed_at: float | None = None
    last_aggregate: Aggregate | None = None
    counter: int = 0
    config: Mapping[str, ConfigEntry] = field(default_factory=dict)
    devices: tuple[DeviceStatus, ...] = ()
    without_reading: tuple[str, ...] = ()
    garbage_readings: tuple[str, ...] = ()
    garbage_znodes: tuple[str, ...] = ()
    outbox: OutboxStatus = OutboxStatus()

    def as_json(self) -> dict[str, Any]:
        """What `status --json` prints, key for key as it always has."""
        return {
            "namespace": self.namespace,
            "incarnation": self.incarnation,
            "leader": self.leader,
            "first_in_line": self.first_in_line,
            "epoch": self.epoch,
            "round": self.round,
            "round_released_at": self.round_released_at,
            "round_released_clock": None if self.round_clock_synced is None
            else clock_label(self.round_clock_synced),
            "round_changed_at": self.round_changed_at,
            "last_aggregate": None if self.last_aggregate is None
            else self.last_aggregate.as_dict(),
            "counter": self.counter,
            "config": {key: entry.as_json() for key, entry in self.config.items()},
            "devices": [device.as_json() for device in self.devices],
            "without_reading": list(self.without_reading),
            "garbage_readings": list(self.garbage_readings),
            "garbage_znodes": list(self.garbage_znodes),
            "outbox": self.outbox.as_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FleetStatus":
        """The inverse of `as_json` (`status --json` as parsed); an absent key takes its
        default. Raises ValueError for a last aggregate that is none."""
        clock = data.get("round_released_clock")
        last = data.get("last_aggregate")
        return cls(
            namespace=data.get("namespace", ""),
            incarnation=data.get("incarnation"),
            leader=data.get("leader"),
            first_in_line=data.get("first_in_line"),
            epoch=data.get("epoch"),
            round=data.get("round"),
            round_released_at=data.get("round_released_at"),
            round_clock_synced=None if clock is None else clock != "unsynced",
            round_changed_at=data.get("round_changed_at"),
            last_aggregate=None if last is None else Aggregate.from_payload(last),
            counter=data.get("counter", 0),
            config={key: ConfigEntry(entry.get("value"), entry.get("error"))
                    for key, entry in data.get("config", {}).items()},
            devices=tuple(map(DeviceStatus.from_json, data.get("devices", ()))),
            without_reading=tuple(data.get("without_reading", ())),
            garbage_readings=tuple(data.get("garbage_readings", ())),
            garbage_znodes=tuple(data.get("garbage_znodes", ())),
            outbox=OutboxStatus.from_json(data.get("outbox", {})),
        )

    def config_entry(self, key: str) -> ConfigEntry:
        return self.config.get(key, ConfigEntry(None, "not read"))

    @property
    def gone(self) -> list[str]:
        """Devices whose reading stays while their node no longer stands as a candidate."""
        return [device.node for device in self.devices if not device.live]


def read_config_entries(zk: Zk, layout: Layout) -> dict[str, ConfigEntry]:
    """Every config key, in CONFIG_KEYS order, with whether nodes use it and why not."""
    config: dict[str, ConfigEntry] = {}
    for key in CONFIG_KEYS:
        try:
            data, _ = zk.get(layout.config_key(key))
        except NoNodeError:
            config[key] = ConfigEntry(None, "not set (nodes use their local default)")
            continue
        except AccessRefused:
            config[key] = ConfigEntry(None, "not readable without the fleet's or the "
                                            "operator's credentials")
            continue
        text = data.decode(errors="replace")
        try:
            CONFIG_PARSERS[key](text)
            config[key] = ConfigEntry(text, None)
        except InvalidValue as error:
            config[key] = ConfigEntry(text, f"invalid, ignored by nodes: {error}")
    return config


def read_config(zk: Zk, layout: Layout) -> dict[str, dict[str, Any]]:
    """`read_config_entries` as `config get --json` prints it (ctl/cli.py)."""
    return {key: entry.as_json() for key, entry in read_config_entries(zk, layout).items()}


def clock_label(synced: bool) -> str:
    return "synced" if synced else "unsynced"


def fleet_status(zk: Zk, layout: Layout, now: float) -> FleetStatus:
    """LookupError when there is no fleet at the namespace."""
    if zk.exists(layout.namespace) is None:
        raise LookupError(f"no fleet at namespace {layout.namespace}")
    collection = collect_readings(zk, layout)
    found = zk.get_many([layout.epoch, layout.barrier, layout.incarnation])
    epoch_found, barrier_found = found[layout.epoch], found[layout.barrier]
    incarnation_found = found[layout.incarnation]
    barrier = BarrierState.decode(barrier_found[0]) if barrier_found else None
    epoch = EpochRecord.decode(epoch_found[0], epoch_found[1].version) if epoch_found \
        else None
    incarnation = Incarnation.decode(incarnation_found[0]) if incarnation_found else None
    first_in_line = current_leader(zk, layout)
    live = set(live_nodes(zk.children_or_none(layout.election)))
    holder = epoch_holder(epoch_found[0]) if epoch_found else None
    opened = barrier if isinstance(barrier, BarrierState) else None
    last = opened.last if opened else None
    return FleetStatus(
        namespace=layout.namespace,
        incarnation=incarnation.id if isinstance(incarnation, Incarnation) else None,
        leader=first_in_line if first_in_line is not None and first_in_line == holder
        else None,
        first_in_line=first_in_line,
        epoch=epoch.epoch if isinstance(epoch, EpochRecord) else None,
        round=opened.round if opened else None,
        round_released_at=opened.released_at if opened else None,
        round_clock_synced=opened.clock_synced if opened else None,
        round_changed_at=barrier_found[1].mtime / 1000 if barrier_found else None,
        last_aggregate=Aggregate.from_payload(last) if last else None,
        counter=fleet_total(zk, layout, collection),
        config=read_config_entries(zk, layout),
        devices=tuple(
            DeviceStatus(node=r.node, value=r.value, age=round(now - r.taken_at, 3),
                         round=r.round, failures=r.failures, clock_synced=r.clock_synced,
                         live=r.node in live)
            for r in collection.readings),
        without_reading=tuple(sorted(live - {r.node for r in collection.readings}
                                     - set(collection.garbage))),
        garbage_readings=tuple(collection.garbage),
        garbage_znodes=tuple(name for name, decoded in (("incarnation", incarnation),
                                                        ("epoch", epoch),
                                                        ("barrier", barrier))
                             if isinstance(decoded, Garbage)),
        outbox=outbox_status(zk, layout),
    )


def outbox_status(zk: Zk, layout: Layout) -> OutboxStatus:
    """Entries that are not rounds are listed, not counted: the next leader removes them."""
    try:
        loaded = load_outbox(zk, layout)
    except NoNodeError:
        return OutboxStatus()
    rounds = loaded.rounds
    return OutboxStatus(pending=len(rounds), oldest=rounds[0].round if rounds else None,
                        dropped=loaded.stats.dropped, rejected=loaded.stats.rejected,
                        garbage=tuple(loaded.garbage))
