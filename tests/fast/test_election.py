"""The election (fleet/election.py): a line of ephemeral sequential candidates, each
watching its predecessor only; ghosts of a previous life removed, a landed create adopted,
impostors set aside."""

import pytest

from zk_sensor.fleet.election import Election, candidate_prefix, current_leader, node_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.memfleet import MemFleet
from zk_sensor.testing.memory import MemoryEnsemble, MemoryZk
from zk_sensor.zk.errors import ZK_ERRORS


def candidates(zk: MemoryZk, layout: Layout, node_id: str) -> list[str]:
    return [name for name in zk.children(layout.election) if node_of(name) == node_id]


def test_the_line_is_the_order_of_standing(fleet: MemFleet, layout: Layout) -> None:
    nodes = [fleet.node(node_id) for node_id in ("c", "a", "b")]
    for node in nodes:
        node.register()
    assert [node.election.evaluate() for node in nodes] == [True, False, False]
    assert current_leader(nodes[0].zk, layout) == "c"


def test_a_leaving_candidate_wakes_only_the_one_behind_it(fleet: MemFleet) -> None:
    a, b, c = (fleet.node(node_id) for node_id in "abc")
    for node in (a, b, c):
        node.register()
        node.election.evaluate()
    a.election.resign()
    assert (b.election_wakeups, c.election_wakeups) == (1, 0), "no herd"
    assert b.election.evaluate() and not c.election.evaluate()


def test_a_candidate_in_the_middle_leaving_rewires_the_watch(fleet: MemFleet) -> None:
    a, b, c = (fleet.node(node_id) for node_id in "abc")
    for node in (a, b, c):
        node.register()
        node.election.evaluate()
    b.zk.expire()
    assert c.election_wakeups == 1
    assert not c.election.evaluate(), "c now watches a"
    a.election.resign()
    assert c.election_wakeups == 2 and c.election.evaluate()


def test_a_ghost_of_a_previous_life_is_removed_on_registering(
        ensemble: MemoryEnsemble, layout: Layout, fleet: MemFleet) -> None:
    previous_life = fleet.node("a")
    previous_life.register()
    ghost = f"{layout.election}/{previous_life.election.candidate}"
    reborn = fleet.node("a")
    assert reborn.register() == [ghost]
    assert candidates(reborn.zk, layout, "a") == [reborn.election.candidate]
    assert reborn.election.evaluate()


def test_a_candidate_whose_create_reply_was_lost_is_adopted_not_duplicated(
        fleet: MemFleet, layout: Layout) -> None:
    a = fleet.node("a")
    prefix = f"{layout.election}/{candidate_prefix('a')}"
    a.zk.lose_reply("create", f"{prefix}*")
    with pytest.raises(ZK_ERRORS):
        a.register()
    landed = candidates(a.zk, layout, "a")
    assert len(landed) == 1, "the create landed"
    assert a.register() == []
    assert a.election.candidate == landed[0]
    assert candidates(a.zk, layout, "a") == landed


def test_standing_again_with_an_unknown_outcome_leaves_no_orphan_in_line(
        fleet: MemFleet, layout: Layout) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.register()
    b.register()
    a.zk.lose_reply("create")
    with pytest.raises(ZK_ERRORS):
        a.election.stand_again()
    assert a.election.untidy and len(candidates(a.zk, layout, "a")) == 2
    a.election.evaluate()
    assert len(candidates(a.zk, layout, "a")) == 1, "the orphan is gone"
    assert not a.election.untidy


def test_standing_again_moves_to_the_back_without_leaving_the_line(
        fleet: MemFleet, layout: Layout) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.register()
    b.register()
    old = a.election.candidate
    a.election.stand_again()
    assert a.election.candidate != old
    assert candidates(a.zk, layout, "a") == [a.election.candidate]
    assert b.election.evaluate() and not a.election.evaluate()


def test_a_persistent_impostor_ahead_is_set_aside_and_removed(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    admin.ensure_path(layout.election)
    impostor = f"{layout.election}/n_x_0000000000"
    admin.create(impostor, b"x")
    a = fleet.node("a")
    a.register()
    assert a.evaluate(), "a leads in spite of the impostor"
    assert "n_x_0000000000 is persistent, no candidate" in caplog.text
    assert admin.exists(impostor) is None


def test_an_impostor_that_cannot_be_removed_is_skipped_for_good(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    admin.ensure_path(layout.election)
    impostor = f"{layout.election}/n_x_0000000000"
    admin.create(impostor, b"x")
    admin.create(f"{impostor}/pinned", b"")
    a = fleet.node("a")
    a.register()
    assert a.evaluate() and admin.exists(impostor) is not None
    a.leader.step_down("test")
    assert a.evaluate(), "the line is read again without it"


def test_names_zookeeper_did_not_number_stand_behind_every_candidate(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    admin.ensure_path(layout.election)
    for name in ("garbage", "n_7_\u00b2", "n_8_" + "9" * 5000):
        admin.create(f"{layout.election}/{name}", b"")
    a = fleet.node("a")
    a.register()
    assert a.election.evaluate()


def test_a_candidate_removed_under_a_node_is_replaced_on_evaluation(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    a = fleet.node("a")
    a.register()
    admin.delete(f"{layout.election}/{a.election.candidate}")
    assert a.election.evaluate()
    assert len(candidates(a.zk, layout, "a")) == 1


def test_a_session_expiry_takes_the_candidate_and_the_node_stands_again(
        fleet: MemFleet, layout: Layout) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.register()
    b.register()
    a.zk.expire()
    a.election.forget()
    assert b.election.evaluate()
    a.register()
    assert not a.election.evaluate() and len(candidates(a.zk, layout, "a")) == 1


def test_registering_on_a_live_session_with_the_same_id_adopts_instead_of_a_ghost(
        ensemble: MemoryEnsemble, layout: Layout, zk: MemoryZk) -> None:
    zk.ensure_path(layout.election)
    election = Election(zk, layout, "a", lambda: None)
    election.register()
    first = election.candidate
    election.candidate = None
    assert election.register() == [] and election.candidate == first


def test_a_pinned_impostor_named_after_a_node_does_not_keep_it_out_of_the_line(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    """A persistent `n_<id>_<seq>` with a child (any fleet credential may create both)
    cannot be removed: the node sets it aside and stands anyway."""
    admin.ensure_path(layout.election)
    impostor = f"{layout.election}/n_a_0000000000"
    admin.create(impostor, b"a")
    admin.create(f"{impostor}/pinned", b"")
    a = fleet.node("a")
    a.register()
    assert a.election.candidate is not None and a.election.candidate != "n_a_0000000000"
    assert a.evaluate()
