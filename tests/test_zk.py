"""The deadline-bound ZooKeeper calls against a real server, where kazoo lacks one."""

from kazoo.client import KazooClient

from zk_sensor.election import Election, candidate_prefix
from zk_sensor.layout import Layout
from zk_sensor.zk import MULTI_READ_BATCH, Zk


def test_get_many_reads_thousands_in_multiread_batches_and_maps_missing_to_none(
    zk_hosts: str, zk_namespace: str, make_zk
) -> None:
    client: KazooClient = make_zk(zk_hosts)
    count = 2 * MULTI_READ_BATCH + 7
    paths = [f"{zk_namespace}/r{i}" for i in range(count)]
    for future in [client.create_async(path, f"v{i}".encode()) for i, path in enumerate(paths)]:
        future.get(timeout=10)
    wanted = [*paths[:5], f"{zk_namespace}/gone", *paths[5:]]
    found = Zk(client, deadline=5.0).get_many(wanted)
    assert list(found) == wanted
    assert found[f"{zk_namespace}/gone"] is None
    assert [found[path][0] for path in paths] == [f"v{i}".encode() for i in range(count)]
    assert found[paths[-1]][1].version == 0


def test_create_if_missing_writes_nothing_when_the_znode_exists(
    zk_hosts: str, zk_namespace: str, make_zk
) -> None:
    """A failed create still costs the quorum a transaction: a mass reconnect must not."""
    client: KazooClient = make_zk(zk_hosts)
    zk = Zk(client, deadline=5.0)
    assert zk.create_if_missing(f"{zk_namespace}/x", b"1")
    before = client.exists(f"{zk_namespace}/x")
    marker = client.create(f"{zk_namespace}/m1")
    first = client.exists(marker).czxid
    assert not zk.create_if_missing(f"{zk_namespace}/x", b"2")
    second = client.exists(client.create(f"{zk_namespace}/m2")).czxid
    assert second == first + 1, "only the marker may have written"
    assert client.get(f"{zk_namespace}/x")[1] == before


def test_registration_adopts_its_own_landed_candidate_and_removes_a_ghost(
    zk_hosts: str, zk_namespace: str, make_zk
) -> None:
    """A candidate create whose reply was lost (it landed under this session) is adopted,
    not duplicated; one left by another session under our id is removed."""
    client: KazooClient = make_zk(zk_hosts)
    previous_life: KazooClient = make_zk(zk_hosts)
    layout = Layout(zk_namespace)
    client.ensure_path(layout.election)
    prefix = f"{layout.election}/{candidate_prefix('a')}"
    ghost = previous_life.create(prefix, b"a", ephemeral=True, sequence=True)
    landed = client.create(prefix, b"a", ephemeral=True, sequence=True)
    election = Election(Zk(client, deadline=5.0), layout, "a", lambda: None)
    assert election.register() == [ghost]
    assert client.get_children(layout.election) == [landed.rsplit("/", 1)[-1]]
    assert election.candidate == landed.rsplit("/", 1)[-1]
