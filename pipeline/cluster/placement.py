"""The coordinator's table: the one owner of which stream runs on which node.

A stream goes to the least loaded node that is alive, has every resource the stream needs and is below its
cap; when there is none it waits, unplaced, with a reason an operator can act on, and is tried again
whenever the caller says room may have appeared (``retry_unplaced``). A drained node gives its streams up
one by one (each is snapshotted there, then placed again elsewhere); a lost node's streams are placed again
at once on the survivors, which resume them from their snapshots.

Every placement of a stream onto a node bumps the stream's generation, and a generation is never issued
twice for one name, not even after the stream is removed and added again. It is the fencing token: a node
cut off by a partition may still believe it runs a stream, and whatever it sends about a generation other
than the current one is dropped (``current``). A restarted coordinator rebuilds the table from what the
agents report and continues the generations above the highest any of them holds.

Pure logic, no I/O and no clock: the Ray actors call it and carry out what it decides. Source configs may
hold credentials, so they stay out of every repr and every reason; streams are named by name only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pipeline.errors import ActionPipeError, check_whole


class PlacementError(ActionPipeError, ValueError):
    """A request about the cluster's nodes or streams that cannot be carried out; ``code`` says which kind
    (the same codes as the single-host stream table's errors, so the control API maps both alike)."""

    code = "invalid"


class DuplicateStreamError(PlacementError):
    code = "duplicate"


class UnknownStreamError(PlacementError, LookupError):
    code = "unknown"


class UnknownNodeError(PlacementError, LookupError):
    code = "unknown"


class NodeStateError(PlacementError):
    """The node is in a state that does not allow the request (a lost node cannot be drained)."""

    code = "conflict"


class NodeState(str, Enum):
    ALIVE = "alive"  # takes new streams
    DRAINING = "draining"  # keeps what it runs until each stream is moved out; takes nothing new
    LOST = "lost"  # fenced: its streams were placed again elsewhere and never go back to this incarnation


class PlacementState(str, Enum):
    PLACED = "placed"  # on a node (confirmed by it or not yet)
    MOVING = "moving"  # still on a draining node, which was asked to snapshot it and give it up
    UNPLACED = "unplaced"  # no eligible node now: waits for a node to join or for room to free
    REMOVED = "removed"


# host:port (an IPv6 host in brackets), no scheme or path: Prometheus refuses a file_sd file with any other
# target in it, and keeps scraping the old targets then, so one bad address would freeze them all.
_ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s/\[\]:@]+):\d{1,5}$")

# A stream counts against a node's cap and load while the node holds it, moving or not.
_ON_NODE = (PlacementState.PLACED, PlacementState.MOVING)


def _checked_amounts(what: str, amounts: Mapping[str, float]) -> dict[str, float]:
    """A copy (the caller's dict may change later) of resource amounts, each a finite number >= 0."""
    if not isinstance(amounts, Mapping):
        raise PlacementError(f"{what} must be a mapping of resource name to amount, got {type(amounts).__name__}")
    checked = {}
    for key, value in amounts.items():
        if not isinstance(key, str) or not key:
            raise PlacementError(f"{what}: a resource name must be a non-empty string, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PlacementError(f"{what}: {key} must be a finite number >= 0, got {value!r}")
        checked[key] = float(value)
    return checked


def _checked_name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise PlacementError(f"{what} name must be a non-empty string, got {name!r}")
    return name


@dataclass(frozen=True)
class NodeInfo:
    """A node as its agent announces it. ``resources`` are the node's Ray resources ({"CPU": 16, "GPU": 1,
    "site_a": 1}); ``capacity`` the most streams it runs at once; ``address`` its metrics endpoint."""

    name: str
    resources: Mapping[str, float]
    capacity: int
    address: str = ""  # host:port; empty when the cell serves no metrics

    def __post_init__(self) -> None:
        _checked_name("a node", self.name)
        object.__setattr__(self, "resources", _checked_amounts(f"node {self.name!r} resources", self.resources))
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int) or self.capacity < 1:
            raise PlacementError(f"node {self.name!r}: capacity must be an integer >= 1, got {self.capacity!r}")
        if not isinstance(self.address, str) or (self.address and not _ADDRESS.match(self.address)):
            raise PlacementError(f"node {self.name!r}: address must be host:port or empty, got {self.address!r}")

    def covers(self, needs: Mapping[str, float]) -> bool:
        return all(self.resources.get(key, 0.0) >= amount for key, amount in needs.items())


@dataclass(frozen=True)
class StreamSpec:
    """A stream as the control API was given it. ``source`` is opaque here (the agent's supervisor reads it)
    and may hold credentials; ``needs`` are the resources a node must have at least ({"GPU": 1})."""

    name: str
    source: Mapping[str, Any] = field(repr=False)
    needs: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _checked_name("a stream", self.name)
        if not isinstance(self.source, Mapping):
            raise PlacementError(f"stream {self.name!r}: source must be a mapping (a source config)")
        object.__setattr__(self, "needs", _checked_amounts(f"stream {self.name!r} needs", self.needs))


@dataclass(frozen=True)
class Placement:
    """Where a stream goes: ``node`` None means unplaced, and ``reason`` says why in an operator's words.
    ``generation`` is the stream's fencing token (for an unplaced stream, the last one issued, 0 if none)."""

    stream: str
    node: str | None
    generation: int
    reason: str

    @property
    def placed(self) -> bool:
        return self.node is not None


@dataclass(frozen=True)
class StaleCopy:
    """After a rebuild: a node still running a stream another node holds in a later generation; it must be
    told to stop it (without snapshotting, since its state is older than the other copy's)."""

    stream: str
    node: str
    generation: int


@dataclass(frozen=True)
class StreamReport:
    spec: StreamSpec
    generation: int

    def __post_init__(self) -> None:
        check_whole(f"stream {self.spec.name!r} generation", self.generation, 1, PlacementError,
                    "a node runs a stream only in a generation the coordinator issued")


@dataclass(frozen=True)
class NodeReport:
    """What one agent tells a restarted coordinator: itself, and the streams it runs with their generations."""

    info: NodeInfo
    streams: Mapping[str, StreamReport]


@dataclass(frozen=True)
class NodeRow:
    name: str
    state: str
    incarnation: int  # 1 for the first join; +1 each time the name joins again after being lost
    load: int
    capacity: int
    address: str
    resources: Mapping[str, float]


@dataclass(frozen=True)
class StreamRow:
    name: str
    state: str
    node: str | None
    generation: int
    confirmed: bool  # the node reported running this generation
    reason: str


@dataclass
class _Node:
    info: NodeInfo
    state: NodeState
    incarnation: int


@dataclass
class _Stream:
    spec: StreamSpec = field(repr=False)
    state: PlacementState
    node: str | None
    generation: int
    reason: str
    confirmed: bool = False
    waiting_since: int = 0  # order in which it became unplaced: the first to wait is the first retried


def _amounts_text(needs: Mapping[str, float]) -> str:
    return ", ".join(f"{key} >= {amount:g}" for key, amount in sorted(needs.items()))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class ClusterTable:
    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        self._streams: dict[str, _Stream] = {}
        # Outlive removals, forgotten nodes and rebuilds: a token or an incarnation is never issued twice.
        self._generations: dict[str, int] = {}
        self._incarnations: dict[str, int] = {}
        self._waiting_counter = 0

    # -- nodes -------------------------------------------------------------------------------------
    def join(self, info: NodeInfo) -> None:
        """A node joins alive. A name not seen before, or one seen as lost (a new incarnation, which starts
        empty: the old one's streams were placed elsewhere when it was lost), becomes a fresh alive node. A
        node already alive or draining only has its info updated (it keeps its streams and its state; a cap
        lowered below its load moves nothing, it takes no new stream until it is below the cap again).

        An agent that restarted before its node was reported lost must be reported lost first (its streams
        died with it); nothing here can tell a restarted agent from one that announces itself again. Call
        ``retry_unplaced`` after a join."""
        node = self._nodes.get(info.name)
        if node is not None and node.state is not NodeState.LOST:
            node.info = info
            return
        incarnation = self._incarnations.get(info.name, 0) + 1
        self._incarnations[info.name] = incarnation
        self._nodes[info.name] = _Node(info, NodeState.ALIVE, incarnation)

    def node_lost(self, name: str) -> list[Placement]:
        """Fence ``name`` and place each of its streams (placed or moving) again on the survivors, in name
        order; the new placements, node None for those no survivor can take. A node unknown or already lost
        changes nothing (Ray and the heartbeats may both report one loss)."""
        node = self._nodes.get(name)
        if node is None or node.state is NodeState.LOST:
            return []
        node.state = NodeState.LOST
        return [self._assign(self._streams[stream]) for stream in self.streams_on(name)]

    def drain(self, name: str) -> list[str]:
        """``name`` takes no new stream, and each stream on it is marked moving: the caller asks the node to
        snapshot and give up each one, and reports each with ``moved_out``. Returns the streams to move, by
        name (again those still moving, when the node was already draining)."""
        node = self._node(name)
        if node.state is NodeState.LOST:
            raise NodeStateError(f"node {name!r} is lost; its streams were already placed on other nodes")
        node.state = NodeState.DRAINING
        moving = self.streams_on(name)
        for stream in moving:
            self._streams[stream].state = PlacementState.MOVING
        return moving

    def moved_out(self, stream: str, node: str) -> Placement | None:
        """``node`` reports that it snapshotted ``stream`` and gave it up: place it again (a draining node is
        never eligible). None, and nothing changes, when the stream is not moving out of that node any
        more (it was removed, or the node was lost meanwhile and the stream already placed again)."""
        entry = self._streams.get(stream)
        if entry is None or entry.state is not PlacementState.MOVING or entry.node != node:
            return None
        return self._assign(entry)

    def drained(self, name: str) -> bool:
        """``name`` is draining (or lost) and no stream is left on it: its agent may stop. An alive node is
        never drained, even an empty one, so an agent is not stopped because it happens to be idle."""
        return self._node(name).state is not NodeState.ALIVE and not self.streams_on(name)

    def forget_node(self, name: str) -> None:
        """Drop a lost node's row (it runs nothing). Its incarnation count is kept for when it joins again."""
        node = self._node(name)
        if node.state is not NodeState.LOST:
            raise NodeStateError(f"node {name!r} is {node.state.value}; only a lost node can be forgotten")
        del self._nodes[name]

    # -- streams -----------------------------------------------------------------------------------
    def add_stream(self, spec: StreamSpec) -> Placement:
        """Place a new stream now, or keep it unplaced with the reason; a name in use is refused and nothing
        changes then (a removed stream's name may be used again; its generations continue)."""
        existing = self._streams.get(spec.name)
        if existing is not None and existing.state is not PlacementState.REMOVED:
            raise DuplicateStreamError(
                f"a stream named {spec.name!r} already exists ({existing.state.value}); remove it first or "
                "choose another name")
        entry = _Stream(spec, PlacementState.UNPLACED, None, self._generations.get(spec.name, 0), "")
        self._streams[spec.name] = entry
        return self._assign(entry)

    def continue_generations(self, name: str, above: int) -> None:
        """The next placement of ``name`` gets a generation above ``above`` (one issued before a restart)."""
        self._generations[name] = max(self._generations.get(name, 0), above)

    def remove_stream(self, name: str) -> str | None:
        """Mark ``name`` removed; the node that held it (to be told to stop it), None when it was unplaced."""
        entry = self._streams.get(name)
        if entry is None or entry.state is PlacementState.REMOVED:
            raise UnknownStreamError(f"no stream named {name!r}")
        node = entry.node if entry.state in _ON_NODE else None
        entry.state, entry.node, entry.confirmed, entry.reason = PlacementState.REMOVED, None, False, "removed"
        return node

    def place(self, spec: StreamSpec) -> Placement:
        """Where ``spec`` would go now, and with which generation; nothing changes (a preview)."""
        node, reason = self._choose(spec.needs)
        generation = self._generations.get(spec.name, 0) + (1 if node is not None else 0)
        return Placement(spec.name, node, generation, reason)

    def retry_unplaced(self) -> list[Placement]:
        """Try every unplaced stream again, the longest waiting first; the placements that succeeded (the
        others keep waiting, their reasons brought up to date). Call it when a node joins or room frees."""
        waiting = sorted((e for e in self._streams.values() if e.state is PlacementState.UNPLACED),
                         key=lambda e: e.waiting_since)
        placed = []
        for entry in waiting:
            node, reason = self._choose(entry.spec.needs)
            if node is None:
                entry.reason = reason
            else:
                placed.append(self._assign(entry))
        return placed

    def confirm(self, stream: str, node: str, generation: int) -> bool:
        """``node`` reports running ``stream`` in ``generation``; False (ignored) when that is not current."""
        if not self.current(stream, node, generation):
            return False
        self._streams[stream].confirmed = True
        return True

    def current(self, stream: str, node: str, generation: int) -> bool:
        """Whether a message from ``node`` about ``stream`` in ``generation`` is from its current holder:
        anything else comes from a fenced node or an older placement and must be dropped."""
        entry = self._streams.get(stream)
        return (entry is not None and entry.state in _ON_NODE and entry.node == node
                and entry.generation == generation)

    # -- a restarted coordinator -------------------------------------------------------------------
    def rebuild(self, reports: Iterable[NodeReport]) -> list[StaleCopy]:
        """Rebuild the table from the agents' reports after the coordinator lost its memory. Each reporting
        node is alive; each stream goes to the node that reports the highest generation of it (ties, which
        fencing should make impossible, to the first node by name), confirmed; generations continue above
        the highest reported. Returns the other copies, which their nodes must stop.

        What no agent holds is gone: nodes that did not report are unknown until they join, a stream that
        was unplaced must be added again, and a drain in progress must be asked for again."""
        reports = sorted(reports, key=lambda r: r.info.name)
        names = [r.info.name for r in reports]
        if len(set(names)) != len(names):
            raise PlacementError(f"two reports from one node among {names}; each agent reports once")
        holders: dict[str, list[tuple[int, str, StreamSpec]]] = {}
        for report in reports:
            for stream, held in report.streams.items():
                if held.spec.name != stream:
                    raise PlacementError(f"node {report.info.name!r} reports {held.spec.name!r} as {stream!r}")
                holders.setdefault(stream, []).append((held.generation, report.info.name, held.spec))
        self._nodes, self._streams = {}, {}
        for report in reports:
            self.join(report.info)
        stale = []
        for stream in sorted(holders):
            copies = sorted(holders[stream], key=lambda c: (-c[0], c[1]))
            generation, node, spec = copies[0]
            self._generations[stream] = max(self._generations.get(stream, 0), generation)
            self._streams[stream] = _Stream(spec, PlacementState.PLACED, node, generation, "reported by its node",
                                            confirmed=True)
            stale += [StaleCopy(stream, other, older) for older, other, _ in copies[1:]]
        return stale

    # -- queries -----------------------------------------------------------------------------------
    def nodes(self) -> list[NodeRow]:
        load = self._loads()
        return [NodeRow(name, n.state.value, n.incarnation, load.get(name, 0), n.info.capacity, n.info.address,
                        dict(n.info.resources)) for name, n in sorted(self._nodes.items())]

    def streams(self) -> list[StreamRow]:
        return [StreamRow(name, e.state.value, e.node, e.generation, e.confirmed, e.reason)
                for name, e in sorted(self._streams.items())]

    def node_of(self, stream: str) -> str | None:
        """The node holding ``stream`` (moving or not); None when it is unplaced or removed."""
        entry = self._streams.get(stream)
        if entry is None:
            raise UnknownStreamError(f"no stream named {stream!r}")
        return entry.node if entry.state in _ON_NODE else None

    def streams_on(self, node: str) -> list[str]:
        """The streams ``node`` holds, placed or moving, by name."""
        return sorted(name for name, e in self._streams.items() if e.node == node and e.state in _ON_NODE)

    def unplaced(self) -> list[str]:
        """The streams waiting for a node, the longest waiting first."""
        waiting = [e for e in self._streams.values() if e.state is PlacementState.UNPLACED]
        return [e.spec.name for e in sorted(waiting, key=lambda e: e.waiting_since)]

    # -- the choice --------------------------------------------------------------------------------
    def _node(self, name: str) -> _Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNodeError(f"no node named {name!r} has joined") from None

    def _loads(self) -> dict[str, int]:
        # A stream assigned and not yet confirmed counts too: a burst of adds must not all pick one node.
        load: dict[str, int] = {}
        for entry in self._streams.values():
            if entry.state in _ON_NODE and entry.node is not None:
                load[entry.node] = load.get(entry.node, 0) + 1
        return load

    def _choose(self, needs: Mapping[str, float]) -> tuple[str | None, str]:
        """The least loaded eligible node (ties to the first by name), or None and why there is none."""
        nodes = sorted(self._nodes.items())
        alive = [(name, n) for name, n in nodes if n.state is NodeState.ALIVE]
        if not alive:
            if not nodes:
                return None, "no node has joined the cluster"
            draining = sum(n.state is NodeState.DRAINING for _, n in nodes)
            return None, f"no node is alive ({draining} draining, {len(nodes) - draining} lost)"
        capable = [(name, n) for name, n in alive if n.info.covers(needs)]
        if not capable:
            return None, f"no alive node has {_amounts_text(needs)}"
        load = self._loads()
        eligible = [name for name, n in capable if load.get(name, 0) < n.info.capacity]
        if not eligible:
            used = sum(load.get(name, 0) for name, _ in capable)
            room = sum(n.info.capacity for _, n in capable)
            which = f"alive node with {_amounts_text(needs)}" if needs else "alive node"
            return None, f"every {which} is full ({_plural(len(capable), 'node')}, {used}/{room} streams)"
        # Load is a count of streams: every stream costs about the same on any node that qualifies.
        chosen = min(eligible, key=lambda name: (load.get(name, 0), name))
        return chosen, f"least loaded of {_plural(len(eligible), 'eligible node')}"

    def _assign(self, entry: _Stream) -> Placement:
        """Place ``entry`` now or mark it unplaced; a placement issues the next generation of its name."""
        node, reason = self._choose(entry.spec.needs)
        if node is None:
            if entry.state is not PlacementState.UNPLACED or not entry.waiting_since:
                self._waiting_counter += 1
                entry.waiting_since = self._waiting_counter
            entry.state, entry.node, entry.confirmed = PlacementState.UNPLACED, None, False
        else:
            entry.generation = self._generations[entry.spec.name] = self._generations.get(entry.spec.name, 0) + 1
            entry.state, entry.node, entry.confirmed = PlacementState.PLACED, node, False
        entry.reason = reason
        return Placement(entry.spec.name, node, entry.generation, reason)
