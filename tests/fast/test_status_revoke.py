"""What the operator's tools read and do on a fleet (fleet/status.py, fleet/revoke.py):
`status --json` as the stable interface shows it, a poisoned namespace shown as garbage,
a stolen node's identity revoked and its candidates gone."""

import json
import time

from zk_sensor.fleet.acl import members_matrix
from zk_sensor.fleet.election import node_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.repair import apply_acls
from zk_sensor.fleet.revoke import revoke_node
from zk_sensor.fleet.status import fleet_status
from zk_sensor.testing.memfleet import MemFleet
from zk_sensor.testing.memory import MemoryEnsemble, MemoryZk

NESTED = b'{"round": ' + b"[" * 5000


def status(zk: MemoryZk, layout: Layout) -> dict:
    return json.loads(json.dumps(fleet_status(zk, layout, time.time()).as_json()))


def test_status_shows_the_leader_the_round_the_devices_and_the_counter(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    b.register()
    for _ in range(3):
        a.measure(10.0)
        b.measure(20.0)
        a.close()
    shown = status(admin, layout)
    assert (shown["leader"], shown["epoch"], shown["round"]) == ("a", 1, 3)
    assert shown["last_aggregate"]["mean"] == 15.0 and shown["counter"] == 6
    assert sorted(device["node"] for device in shown["devices"]) == ["a", "b"]
    assert shown["outbox"]["pending"] == 3 and shown["garbage_znodes"] == []


def test_status_shows_a_poisoned_namespace_as_garbage(layout: Layout,
                                                      admin: MemoryZk) -> None:
    for path in (layout.incarnation, layout.epoch, layout.barrier, layout.reading("ghost"),
                 layout.outbox_round(3)):
        admin.ensure_path(path.rsplit("/", 1)[0])
        admin.create(path, NESTED)
    admin.set(layout.outbox, NESTED)
    admin.ensure_path(layout.election)
    admin.create(f"{layout.election}/garbage", b"")
    shown = status(admin, layout)
    assert shown["garbage_znodes"] == ["incarnation", "epoch", "barrier"]
    assert shown["garbage_readings"] == ["ghost"]
    assert shown["outbox"]["garbage"] == ["000000000003"]
    assert shown["leader"] is None


def test_a_revoked_node_leaves_the_line_and_the_acls_and_its_count_stays(
        fleet: MemFleet, layout: Layout, ensemble: MemoryEnsemble) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    b.register()
    b.measure(1.0)
    operator = ensemble.client()
    members = ["node-a:YQ==", "node-b:Yg=="]
    apply_acls(operator, layout, members_matrix("operator:b3A=", members))
    outcome = revoke_node(operator, layout, "b")
    assert any("node-b removed from the member ACL" in line for line in outcome.lines)
    assert [node_of(name) for name in operator.children(layout.election)] == ["a"]
    assert "node-b" not in operator.get(layout.member_acl)[0].decode()
    assert json.loads(operator.get(layout.revoked)[0]) == ["node-b"]
    for path in (layout.barrier, layout.reading("b"), layout.outbox):
        assert all(acl.id.id != "node-b:Yg==" for acl in operator.get_acls(path)[0]), path
    assert operator.exists(layout.reading("b")) is not None, "its count stays"
    again = revoke_node(operator, layout, "b")
    assert again.lines == ["node-b is already revoked: nothing changed"]
