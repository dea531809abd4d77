"""The one line a node shows systemd (`systemctl status`): whether it reaches ZooKeeper,
whether it leads (and the office's epoch and devices) or whom it follows, the open round
and the last mean. Built only when a systemd listens, after every loop turn."""

from zk_sensor.fleet.barrier import BarrierView
from zk_sensor.node.leader import Leader


def status_line(link_up: bool, view: BarrierView, leader: Leader) -> str:
    if not link_up:
        return "ZooKeeper unreachable; waiting to reconnect"
    barrier = view.state
    round_number = barrier.round if barrier else "?"
    last = barrier.last if barrier else None
    mean = (f"last mean {last['mean']:.2f} over {last['count']} devices"
            if last else "no mean yet")
    office, devices = leader.office, leader.devices
    if office is not None:
        return (f"leader (epoch {office.epoch}), "
                f"{len(devices) if devices is not None else '?'} devices, "
                f"round {round_number}, {mean}")
    followed = barrier.leader if barrier and barrier.leader else None
    return (f"follower (leader: {'node ' + followed if followed else 'none yet'}), "
            f"round {round_number}, {mean}")
