"""`acl apply` (fleet/repair.py): the matrix set on every znode, idempotently; what a
member made hostile is removed, or reported for the break-glass identity; a member cannot
run it at all."""

import pytest

from zk_sensor.fleet.acl import AclMatrix, same_acl
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.repair import BREAK_GLASS_HINT, apply_acls
from zk_sensor.testing.memory import MemoryEnsemble, MemoryZk
from zk_sensor.zk.errors import AccessRefused
from zk_sensor.zk.interface import Permissions

MATRIX = AclMatrix(operator="operator:b3A=", members=("fleet:ZmxlZXQ=",))


def test_the_matrix_is_set_everywhere_and_a_second_run_changes_nothing(
        fleet, layout: Layout, ensemble: MemoryEnsemble) -> None:
    a = fleet.node("a")
    a.lead()
    a.measure(1.0)
    a.close()
    operator = ensemble.client()
    first = apply_acls(operator, layout, MATRIX)
    assert first.unrepaired == 0 and first.changed > 0
    for path in (layout.namespace, layout.barrier, layout.epoch, layout.member_acl,
                 layout.reading("a"), layout.outbox_round(0)):
        assert same_acl(operator.get_acls(path)[0], MATRIX.for_path(layout, path)), path
    again = apply_acls(operator, layout, MATRIX)
    assert again.changed == 0 and again.znodes == first.znodes


def test_a_hostile_leaf_is_removed(fleet, layout: Layout, ensemble: MemoryEnsemble,
                                   admin: MemoryZk) -> None:
    fleet.node("a").lead()
    operator = ensemble.client()
    hostile = layout.reading("squatter")
    admin.create(hostile, b"{}")
    ensemble.refuse(hostile, Permissions.ALL, only=operator)
    report = apply_acls(operator, layout, MATRIX)
    assert f"removed hostile znode {hostile}" in report.lines
    assert admin.exists(hostile) is None and report.unrepaired == 0


def test_a_hostile_znode_with_children_is_left_to_the_break_glass_identity(
        fleet, layout: Layout, ensemble: MemoryEnsemble, admin: MemoryZk) -> None:
    fleet.node("a").lead()
    operator = ensemble.client()
    hostile = f"{layout.election}/n_x_0000000000"
    admin.create(hostile, b"x")
    admin.create(f"{hostile}/pinned", b"")
    ensemble.refuse(hostile, Permissions.ALL, only=operator)
    report = apply_acls(operator, layout, MATRIX)
    assert report.unrepaired == 1
    assert f"cannot repair {hostile}: {BREAK_GLASS_HINT}" in report.lines
    repaired = apply_acls(admin, layout, MATRIX)
    assert repaired.unrepaired == 0
    assert same_acl(admin.get_acls(hostile)[0], MATRIX.for_path(layout, hostile))


def test_a_squatted_operator_znode_is_removed_and_created_again(
        fleet, layout: Layout, ensemble: MemoryEnsemble, admin: MemoryZk) -> None:
    fleet.node("a").lead()
    operator = ensemble.client()
    admin.create(layout.switchover, b'{"epoch": 1, "to": null, "candidate": null}')
    ensemble.refuse(layout.switchover, Permissions.ALL, only=operator)
    report = apply_acls(operator, layout, MATRIX)
    assert f"removed hostile znode {layout.switchover}" in report.lines
    assert operator.get(layout.switchover)[0] == b""
    assert same_acl(operator.get_acls(layout.switchover)[0], MATRIX.config)


def test_a_member_running_acl_apply_touches_nothing(fleet, layout: Layout,
                                                    ensemble: MemoryEnsemble) -> None:
    fleet.node("a").lead()
    member = ensemble.client()
    ensemble.refuse(layout.namespace, Permissions.ADMIN, only=member)
    before = ensemble.dump(layout.namespace)
    calls = len(member.calls)
    with pytest.raises(AccessRefused):
        apply_acls(member, layout, MATRIX)
    assert ensemble.dump(layout.namespace) == before
    assert {op for op, _ in member.calls[calls:]} <= {"exists", "get_acls", "set_acls"}
