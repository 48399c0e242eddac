"""The coordinator's stream-to-node table: least-loaded choice under caps and resources, reasons for waiting,
generations as fencing tokens, node loss, drains, and the rebuild of a restarted coordinator."""

from __future__ import annotations

import pytest

from pipeline.cluster.placement import (
    ClusterTable,
    DuplicateStreamError,
    NodeInfo,
    NodeReport,
    NodeStateError,
    Placement,
    PlacementError,
    StaleCopy,
    StreamReport,
    StreamSpec,
    UnknownNodeError,
    UnknownStreamError,
)
from pipeline.errors import ActionPipeError

SECRET = "rtsp://admin:hunter2@10.0.0.9/cam"


def node(name: str, capacity: int = 4, address: str = "", **resources: float) -> NodeInfo:
    return NodeInfo(name, {"CPU": 8, **resources}, capacity, address)


def spec(name: str, **needs: float) -> StreamSpec:
    return StreamSpec(name, {"uri": SECRET, "name": name}, needs)


def table(*nodes: NodeInfo) -> ClusterTable:
    t = ClusterTable()
    for info in nodes:
        t.join(info)
    return t


def rows(t: ClusterTable) -> dict[str, tuple]:
    return {r.name: (r.state, r.node, r.generation) for r in t.streams()}


# -- the choice ------------------------------------------------------------------------------------

def test_the_least_loaded_node_wins():
    t = table(node("a"), node("b"), node("c"))
    for name in ("s1", "s2", "s3", "s4"):
        t.add_stream(spec(name))
    assert [t.node_of(s) for s in ("s1", "s2", "s3", "s4")] == ["a", "b", "c", "a"]
    t.remove_stream("s2")
    assert t.add_stream(spec("s5")).node == "b"  # b is the only one left with one stream less


def test_a_node_that_joins_later_takes_the_next_streams_until_it_catches_up():
    t = table(node("a", capacity=8))
    for i in range(3):
        t.add_stream(spec(f"s{i}"))
    t.join(node("b", capacity=8))
    assert [t.add_stream(spec(f"n{i}")).node for i in range(4)] == ["b", "b", "b", "a"]


def test_ties_go_to_the_first_node_by_name_whatever_the_join_order():
    t = table(node("zeta"), node("alpha"), node("mid"))
    assert t.add_stream(spec("s")).node == "alpha"


def test_streams_assigned_and_not_yet_confirmed_count_as_load():
    t = table(node("a"), node("b"))
    first = t.add_stream(spec("s1"))
    assert t.streams()[0].confirmed is False
    assert t.add_stream(spec("s2")).node == "b"  # a's unconfirmed stream already counts
    assert t.confirm("s1", "a", first.generation) is True
    assert t.add_stream(spec("s3")).node == "a"
    assert {r.name: r.load for r in t.nodes()} == {"a": 2, "b": 1}


def test_a_node_at_its_cap_takes_no_more_and_the_stream_waits_with_the_reason():
    t = table(node("a", capacity=1), node("b", capacity=2))
    assert [t.add_stream(spec(f"s{i}")).node for i in range(3)] == ["a", "b", "b"]
    waiting = t.add_stream(spec("s3"))
    assert waiting == Placement("s3", None, 0, "every alive node is full (2 nodes, 3/3 streams)")
    assert t.unplaced() == ["s3"]
    assert rows(t)["s3"] == ("unplaced", None, 0)


def test_a_stream_goes_only_to_a_node_with_every_resource_it_needs_even_a_busier_one():
    t = table(node("cpu1"), node("gpu", GPU=1), node("site", site_a=1))
    t.add_stream(spec("busy"))  # cpu1
    t.add_stream(spec("busy2"))  # gpu
    t.add_stream(spec("busy3"))  # site
    t.add_stream(spec("busy4"))  # cpu1
    t.add_stream(spec("busy5"))  # gpu: now gpu holds 2, cpu1 2, site 1
    assert t.add_stream(spec("g", GPU=1)).node == "gpu"
    assert t.add_stream(spec("sa", site_a=1)).node == "site"
    assert t.add_stream(spec("c", CPU=8)).node == "cpu1"  # every node has 8 CPUs: least loaded, then by name


def test_needs_compare_amounts_and_every_need_must_be_met():
    t = table(node("one", GPU=1, site_a=1), node("two", GPU=2))
    assert t.add_stream(spec("big", GPU=2)).node == "two"
    assert t.add_stream(spec("both", GPU=1, site_a=1)).node == "one"
    missing = t.add_stream(spec("far", GPU=2, site_a=1))
    assert missing.node is None
    assert missing.reason == "no alive node has GPU >= 2, site_a >= 1"


def test_full_nodes_with_the_resources_are_named_by_what_was_needed():
    t = table(node("gpu", capacity=1, GPU=1), node("cpu", capacity=5))
    t.add_stream(spec("g1", GPU=1))
    assert t.add_stream(spec("g2", GPU=1)).reason == "every alive node with GPU >= 1 is full (1 node, 1/1 streams)"
    assert t.add_stream(spec("c")).node == "cpu"  # the cap is per node: others still take streams


def test_the_reasons_when_no_node_is_alive():
    t = ClusterTable()
    assert t.add_stream(spec("s")).reason == "no node has joined the cluster"
    t.join(node("a"))
    t.join(node("b"))
    t.drain("a")
    t.node_lost("b")
    assert t.place(spec("x")).reason == "no node is alive (1 draining, 1 lost)"


def test_place_is_a_preview_that_changes_nothing():
    t = table(node("a"))
    preview = t.place(spec("s"))
    assert preview == Placement("s", "a", 1, "least loaded of 1 eligible node")
    assert t.streams() == [] and t.nodes()[0].load == 0
    assert t.add_stream(spec("s")).generation == 1  # the preview issued no generation


# -- adding and removing -----------------------------------------------------------------------------

def test_a_duplicate_name_is_refused_and_nothing_changes():
    t = table(node("a"), node("b"))
    t.add_stream(spec("s"))
    before = (t.streams(), t.nodes())
    with pytest.raises(DuplicateStreamError, match="'s' already exists"):
        t.add_stream(spec("s", GPU=1))
    assert (t.streams(), t.nodes()) == before


def test_an_unplaced_name_is_a_duplicate_too():
    t = ClusterTable()
    t.add_stream(spec("s"))
    with pytest.raises(DuplicateStreamError, match="unplaced"):
        t.add_stream(spec("s"))


def test_remove_says_which_node_to_tell_and_frees_its_room():
    t = table(node("a", capacity=1))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))
    assert t.remove_stream("s2") is None  # it was waiting: no node to tell
    assert t.remove_stream("s1") == "a"
    assert rows(t)["s1"] == ("removed", None, 1)
    assert t.node_of("s1") is None and t.streams_on("a") == [] and t.unplaced() == []
    with pytest.raises(UnknownStreamError):
        t.remove_stream("s1")
    with pytest.raises(UnknownStreamError):
        t.remove_stream("never")
    with pytest.raises(UnknownStreamError):
        t.node_of("never")


def test_retry_places_waiting_streams_when_room_frees_the_longest_waiting_first():
    t = table(node("a", capacity=1))
    t.add_stream(spec("s0"))
    t.add_stream(spec("zz"))
    t.add_stream(spec("aa"))
    assert t.unplaced() == ["zz", "aa"]
    t.remove_stream("s0")
    assert t.retry_unplaced() == [Placement("zz", "a", 1, "least loaded of 1 eligible node")]
    assert t.unplaced() == ["aa"]
    assert rows(t)["aa"][0] == "unplaced"
    assert t.retry_unplaced() == []  # still full: nothing placed, nothing changes


def test_retry_brings_the_reason_of_a_stream_still_waiting_up_to_date():
    t = ClusterTable()
    t.add_stream(spec("g", GPU=1))
    t.join(node("cpu"))
    assert t.retry_unplaced() == []
    assert t.streams()[0].reason == "no alive node has GPU >= 1"


def test_waiting_streams_are_placed_when_a_node_joins_where_they_fit():
    t = table(node("cpu", capacity=1))
    t.add_stream(spec("c1"))
    t.add_stream(spec("c2"))
    t.add_stream(spec("g", GPU=1))
    t.join(node("gpu", capacity=1, GPU=1))
    placed = t.retry_unplaced()
    assert [(p.stream, p.node) for p in placed] == [("c2", "gpu")]  # first come, first served
    assert t.unplaced() == ["g"]
    assert {r.name: r.reason for r in t.streams()}["g"] == "every alive node with GPU >= 1 is full (1 node, 1/1 streams)"


# -- generations ----------------------------------------------------------------------------------

def test_every_placement_bumps_the_generation_and_none_is_ever_reused():
    t = table(node("a"), node("b"))
    assert t.add_stream(spec("s")).generation == 1
    [moved] = t.node_lost("a")
    assert (moved.node, moved.generation) == ("b", 2)
    t.join(node("c"))
    t.drain("b")
    assert t.moved_out("s", "b").generation == 3
    t.remove_stream("s")
    again = t.add_stream(spec("s"))
    assert (again.node, again.generation) == ("c", 4)  # the name's generations go on after a removal


def test_waiting_issues_no_generation_and_the_next_placement_takes_the_next_one():
    t = table(node("a", capacity=1))
    t.add_stream(spec("s1"))
    [moved] = t.node_lost("a")
    assert moved == Placement("s1", None, 1, "no node is alive (0 draining, 1 lost)")
    t.join(node("b"))
    assert [(p.node, p.generation) for p in t.retry_unplaced()] == [("b", 2)]


def test_only_the_current_holder_and_generation_are_current_and_confirmed():
    t = table(node("a"), node("b"))
    first = t.add_stream(spec("s"))
    assert t.current("s", "a", first.generation)
    assert not t.current("s", "b", first.generation)
    assert not t.current("s", "a", first.generation + 1)
    assert not t.current("nothing", "a", 1)
    [second] = t.node_lost("a")
    assert not t.current("s", "a", first.generation)  # the fenced node's reports are dropped
    assert t.confirm("s", "a", first.generation) is False
    assert t.streams()[0].confirmed is False
    assert t.confirm("s", "b", second.generation) is True
    assert t.streams()[0].confirmed is True
    t.remove_stream("s")
    assert not t.current("s", "b", second.generation)


# -- node loss ----------------------------------------------------------------------------------------

def test_a_lost_nodes_streams_move_to_the_survivors_and_no_other_stream_moves():
    t = table(node("a"), node("b"), node("c"))
    for i in range(6):
        t.add_stream(spec(f"s{i}"))  # a: s0 s3, b: s1 s4, c: s2 s5
    before = rows(t)
    moved = t.node_lost("a")
    assert [(p.stream, p.node, p.generation) for p in moved] == [("s0", "b", 2), ("s3", "c", 2)]
    after = rows(t)
    assert {s: after[s] for s in ("s1", "s2", "s4", "s5")} == {s: before[s] for s in ("s1", "s2", "s4", "s5")}
    assert t.streams_on("a") == []
    assert [(r.name, r.state, r.load) for r in t.nodes()] == [("a", "lost", 0), ("b", "alive", 3), ("c", "alive", 3)]


def test_a_lost_nodes_streams_never_go_back_to_it_even_when_the_survivors_are_full():
    t = table(node("a", capacity=2), node("b", capacity=1))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))
    t.add_stream(spec("s3"))  # a: s1 s3, b: s2
    moved = t.node_lost("a")
    assert [(p.stream, p.node) for p in moved] == [("s1", None), ("s3", None)]
    assert moved[0].reason == "every alive node is full (1 node, 1/1 streams)"
    assert t.retry_unplaced() == []
    assert t.unplaced() == ["s1", "s3"]


def test_a_node_lost_twice_or_never_seen_changes_nothing():
    t = table(node("a"), node("b"))
    t.add_stream(spec("s"))
    assert len(t.node_lost("a")) == 1
    before = rows(t)
    assert t.node_lost("a") == []
    assert t.node_lost("ghost") == []
    assert rows(t) == before


def test_a_lost_node_that_joins_again_is_a_new_incarnation_that_starts_empty_and_takes_waiting_streams():
    t = table(node("a", capacity=2))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))
    t.node_lost("a")
    t.join(node("a", capacity=2))
    [row] = t.nodes()
    assert (row.state, row.incarnation, row.load) == ("alive", 2, 0)
    assert [(p.stream, p.node, p.generation) for p in t.retry_unplaced()] == [("s1", "a", 2), ("s2", "a", 2)]
    assert not t.current("s1", "a", 1)  # the old incarnation's generation stays fenced


def test_joining_again_while_alive_updates_the_node_and_keeps_its_streams():
    t = table(node("a", capacity=3, address="10.0.0.1:9400"))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))
    t.join(node("a", capacity=1, address="10.0.0.1:9500", GPU=1))
    [row] = t.nodes()
    assert (row.state, row.incarnation, row.load, row.capacity, row.address) == ("alive", 1, 2, 1, "10.0.0.1:9500")
    assert row.resources["GPU"] == 1
    assert t.streams_on("a") == ["s1", "s2"]  # over the new cap: nothing is evicted...
    assert t.add_stream(spec("s3")).node is None  # ...and nothing new comes


def test_only_a_lost_node_can_be_forgotten_and_its_incarnations_go_on():
    t = table(node("a"))
    with pytest.raises(NodeStateError):
        t.forget_node("a")
    t.node_lost("a")
    t.forget_node("a")
    assert t.nodes() == []
    with pytest.raises(UnknownNodeError):
        t.forget_node("a")
    t.join(node("a"))
    assert t.nodes()[0].incarnation == 2


# -- drains -------------------------------------------------------------------------------------------

def test_a_drain_marks_the_streams_moving_and_they_stay_until_moved_out():
    t = table(node("a"), node("b"))
    for name in ("s1", "s2", "s3"):
        t.add_stream(spec(name))  # a: s1 s3, b: s2
    assert t.drain("a") == ["s1", "s3"]
    assert rows(t) == {"s1": ("moving", "a", 1), "s2": ("placed", "b", 1), "s3": ("moving", "a", 1)}
    assert t.node_of("s1") == "a" and t.current("s1", "a", 1)  # a still runs it until it gives it up
    assert t.drained("a") is False
    assert t.add_stream(spec("new")).node == "b"  # a draining node takes nothing new, even less loaded
    placed = t.moved_out("s1", "a")
    assert (placed.node, placed.generation) == ("b", 2)
    assert t.drained("a") is False
    t.moved_out("s3", "a")
    assert t.drained("a") is True
    assert [(r.name, r.state, r.load) for r in t.nodes()] == [("a", "draining", 0), ("b", "alive", 4)]


def test_a_stream_moved_out_never_goes_back_to_the_draining_node():
    t = table(node("a"), node("b", capacity=1))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))  # a: s1, b: s2 (full)
    t.drain("a")
    placed = t.moved_out("s1", "a")
    assert placed == Placement("s1", None, 1, "every alive node is full (1 node, 1/1 streams)")
    assert t.streams_on("a") == [] and t.drained("a")
    assert t.retry_unplaced() == []  # a has room, but it is draining


def test_a_late_or_wrong_moved_out_changes_nothing():
    t = table(node("a"), node("b"))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))
    assert t.moved_out("s1", "a") is None  # not moving: a never was asked
    t.drain("a")
    assert t.moved_out("s1", "b") is None  # not from the node it is leaving
    assert t.moved_out("nothing", "a") is None
    assert rows(t)["s1"] == ("moving", "a", 1)


def test_a_draining_node_lost_before_giving_its_streams_up_has_them_placed_at_once():
    t = table(node("a"), node("b"))
    t.add_stream(spec("s1"))
    t.drain("a")
    [moved] = t.node_lost("a")
    assert (moved.node, moved.generation) == ("b", 2)
    assert t.moved_out("s1", "a") is None  # the dead node's report, if it ever comes, is stale
    assert rows(t)["s1"] == ("placed", "b", 2)


def test_a_stream_removed_while_moving_is_not_placed_again():
    t = table(node("a"), node("b"))
    t.add_stream(spec("s1"))
    t.drain("a")
    assert t.remove_stream("s1") == "a"
    assert t.moved_out("s1", "a") is None
    assert t.drained("a") and rows(t)["s1"] == ("removed", None, 1)


def test_drain_again_returns_what_is_still_moving():
    t = table(node("a"), node("b"))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))
    t.add_stream(spec("s3"))
    assert t.drain("a") == ["s1", "s3"]
    t.moved_out("s1", "a")
    assert t.drain("a") == ["s3"]


def test_drain_refuses_a_lost_or_unknown_node_and_an_idle_alive_node_is_not_drained():
    t = table(node("a"), node("b"))
    t.node_lost("a")
    with pytest.raises(NodeStateError, match="lost"):
        t.drain("a")
    with pytest.raises(UnknownNodeError):
        t.drain("ghost")
    with pytest.raises(UnknownNodeError):
        t.drained("ghost")
    assert t.drained("b") is False


def test_a_draining_node_that_announces_itself_again_stays_draining():
    t = table(node("a"), node("b"))
    t.add_stream(spec("s1"))
    t.drain("a")
    t.join(node("a", capacity=9))
    assert t.nodes()[0].state == "draining"
    assert t.add_stream(spec("s2")).node == "b"


# -- a restarted coordinator ---------------------------------------------------------------------

def report(info: NodeInfo, **streams: int) -> NodeReport:
    return NodeReport(info, {name: StreamReport(spec(name), generation) for name, generation in streams.items()})


def test_rebuild_puts_each_stream_on_the_node_with_its_highest_generation_and_names_the_stale_copies():
    t = ClusterTable()
    stale = t.rebuild([report(node("a"), s1=3, s2=7), report(node("b"), s1=5), report(node("c"))])
    assert stale == [StaleCopy("s1", "a", 3)]
    assert rows(t) == {"s1": ("placed", "b", 5), "s2": ("placed", "a", 7)}
    assert all(r.confirmed for r in t.streams())
    assert [(r.name, r.state, r.load) for r in t.nodes()] == [("a", "alive", 1), ("b", "alive", 1), ("c", "alive", 0)]
    assert t.current("s1", "b", 5) and not t.current("s1", "a", 3)


def test_after_a_rebuild_generations_continue_above_the_highest_reported():
    t = ClusterTable()
    t.rebuild([report(node("a"), s1=3, s2=2), report(node("b"), s1=5)])
    [moved] = t.node_lost("b")
    assert (moved.stream, moved.node, moved.generation) == ("s1", "a", 6)
    t.remove_stream("s2")
    assert t.add_stream(spec("s2")).generation == 3  # a removed name continues too


def test_nodes_that_do_not_report_are_unknown_after_a_rebuild():
    t = table(node("old"))
    t.add_stream(spec("s"))
    t.rebuild([report(node("a"))])
    assert [r.name for r in t.nodes()] == ["a"]
    assert t.streams() == []  # what no agent holds is gone
    with pytest.raises(UnknownNodeError):
        t.drain("old")
    assert t.add_stream(spec("s")).generation == 2  # this table still remembers issuing 1


def test_rebuild_refuses_two_reports_from_one_node_or_a_stream_reported_under_another_name():
    with pytest.raises(PlacementError, match="two reports"):
        ClusterTable().rebuild([report(node("a")), report(node("a"))])
    mislabeled = NodeReport(node("a"), {"x": StreamReport(spec("y"), 1)})
    with pytest.raises(PlacementError, match="reports 'y' as 'x'"):
        ClusterTable().rebuild([mislabeled])


# -- messages -------------------------------------------------------------------------------------

def test_the_source_stays_out_of_reprs_rows_and_reasons():
    t = table(node("a", capacity=1))
    t.add_stream(spec("s1"))
    t.add_stream(spec("s2"))
    shown = repr(spec("s1")) + repr(t.streams()) + repr(t.nodes()) + repr(t.place(spec("s3")))
    assert "hunter2" not in shown and "rtsp" not in shown
    assert "s1" in shown


@pytest.mark.parametrize("make", [
    lambda: NodeInfo("a", {}, 0),
    lambda: NodeInfo("a", {}, True),
    lambda: NodeInfo("a", {"GPU": -1}, 1),
    lambda: NodeInfo("a", {"GPU": float("nan")}, 1),
    lambda: NodeInfo("a", {"": 1}, 1),
    lambda: NodeInfo("", {}, 1),
    lambda: NodeInfo("a", {}, 1, "http://10.0.0.1:9400"),
    lambda: NodeInfo("a", {}, 1, "10.0.0.1"),
    lambda: StreamSpec("", {}),
    lambda: StreamSpec("s", "rtsp://cam"),
    lambda: StreamSpec("s", {}, {"GPU": "one"}),
    lambda: StreamReport(StreamSpec("s", {}), 0),
], ids=["capacity-0", "capacity-bool", "negative", "nan", "empty-resource", "empty-node", "scheme", "no-port",
        "empty-stream", "source-not-mapping", "need-not-number", "generation-0"])
def test_bad_nodes_and_streams_are_refused_with_the_projects_error(make):
    with pytest.raises(PlacementError) as caught:
        make()
    assert isinstance(caught.value, ActionPipeError)


def test_node_and_stream_keep_their_own_copy_of_the_amounts():
    resources, needs = {"GPU": 1}, {"GPU": 1}
    info, wanted = NodeInfo("a", resources, 1, "[::1]:9400"), StreamSpec("s", {}, needs)
    resources["GPU"], needs["GPU"] = 0, 5
    assert info.resources == {"GPU": 1.0} and wanted.needs == {"GPU": 1.0}
    assert table(info).add_stream(wanted).node == "a"
