"""What a leader has scanned, summarised so its successor does not scan it again.

When a leader dies mid-sweep the follower must finish the sweep, not redo
it: 5,000 duplicate exports would be wrong and slow. The leader therefore
keeps one number, the *scan checkpoint*: the highest pod resourceVersion
``W`` such that every pod state with ``resourceVersion <= W`` that was due
for a scan (ready, not scanned at its restart count) has been scanned *and
its records delivered by every exporter* — a record still in memory dies
with the leader, and a dropped one never arrives, so its pod must be scanned
again. ``W`` is the rv just below the oldest due-but-undelivered pod, or the
newest pod rv seen when there is none. It rides on every Lease renewal as an
annotation (no extra request). A successor trusts a ready pod whose current
rv is ``<= W``: that state was seen, scanned and delivered by its
predecessor. So only records delivered since the last renewal (the in-flight
batch), and pods behind a failing one, are exported twice; none is skipped.

Deliveries are tracked by position in each exporter's lane, a FIFO
(``gpuid.delivery.lane``): accepted records leave it in order, delivered or lost (a
record the backend refused, an unreadable spool line or segment). A pod's records in a
lane are the positions it accepted between the previous scan's submission
and this one's; they are settled once every lane has let its last one go.
A pod stays due — the checkpoint cannot pass it this term — when a lane
refused any of its records on arrival (queue or spool full, spool error), or
when, by the time they settled, a lane had lost a record at or after its
first position. A loss further on thus holds it back too: a few duplicates
after a handover, never a skipped pod. The watch scope is stored with ``W``,
and a checkpoint for another scope is ignored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence

from gpuid.delivery.lane import Tally
from gpuid.kube.objects import PodInfo

CHECKPOINT_KEY = "gpuid.io/scanned-through"
SCOPE_KEY = "gpuid.io/scan-scope"


class ScanProgress:
    """The checkpoint this replica can vouch for, and the one it inherited."""

    def __init__(
        self, scope: str, inherited: Mapping[str, str], tallies: Callable[[], Sequence[Tally]]
    ) -> None:
        self.scope = scope
        self._tallies = tallies  # each exporter lane's running counts (``Delivery.tallies``)
        self._last = list(tallies())  # the counts after the previous submission
        # (per lane: its first and past-its-last position, uid, restarts), oldest first
        self._undelivered: deque[tuple[list[tuple[int, int]], str, int]] = deque()
        raw = inherited.get(CHECKPOINT_KEY, "")
        same_scope = inherited.get(SCOPE_KEY) == scope
        self.inherited = int(raw) if same_scope and raw.isdigit() else 0
        self._due: dict[str, tuple[int, int]] = {}  # uid -> (rv when it became due, restarts)
        self._done: dict[str, int] = {}  # uid -> restart count at the last scan
        self._newest = 0  # the highest pod rv seen
        self._unknown_rv = False  # a due pod without an integer rv: vouch for nothing
        self.synced = False

    def already_scanned(self, pod: PodInfo) -> bool:
        """True when the predecessor's checkpoint covers this ready pod state."""
        return pod.ready and 0 < pod.resource_version <= self.inherited

    def observe(self, kind: str, pod: PodInfo) -> None:
        """Follow one pod event (after the scanner has seen it)."""
        self._newest = max(self._newest, pod.resource_version)
        uid = pod.uid
        if kind == "DELETED":
            self._due.pop(uid, None)
            self._done.pop(uid, None)
            return
        due, done = self._due.get(uid), self._done.get(uid)
        if not pod.ready:
            if due is not None and done != due[1]:  # never scanned at that count: no longer due
                del self._due[uid]
        elif done != pod.restarts and (due is None or due[1] != pod.restarts):
            self._due[uid] = (pod.resource_version, pod.restarts)
            self._unknown_rv |= pod.resource_version == 0

    def inherit(self, pod: PodInfo) -> None:
        """The predecessor scanned and delivered ``pod`` at its restart count."""
        self._done[pod.uid] = pod.restarts

    def scanned(self, pod: PodInfo, records: int) -> None:
        """A scan of ``pod`` succeeded and its ``records`` were *just* submitted for delivery.

        What the lanes accepted since the previous call is taken to be this pod's:
        the scanner submits and reports a scan with no ``await`` in between.
        """
        self._done[pod.uid] = pod.restarts
        last, self._last = self._last, list(self._tallies())
        spans = [(before.accepted, now.accepted) for now, before in zip(self._last, last, strict=True)]
        if any(end - start < records for start, end in spans):
            return  # a lane refused some of them (queue or spool full): the pod stays due
        self._undelivered.append((spans, pod.uid, pod.restarts))

    def _settle_deliveries(self) -> None:
        lanes = self._tallies()
        while self._undelivered and all(
            lane.left >= end for lane, (_, end) in zip(lanes, self._undelivered[0][0], strict=True)
        ):
            spans, uid, restarts = self._undelivered.popleft()
            if any(
                start < min(end, lane.lost_through) for lane, (start, end) in zip(lanes, spans, strict=True)
            ):
                continue  # a lane lost one of its records, or a later one: it stays due
            due = self._due.get(uid)
            if due is not None and due[1] == restarts:
                del self._due[uid]

    def checkpoint(self) -> int | None:
        """``W`` (see the module docstring), or None when this replica cannot vouch for any."""
        if not self.synced or self._unknown_rv:
            return None
        self._settle_deliveries()
        if not self._due:
            return self._newest
        return min(rv for rv, _ in self._due.values()) - 1

    def annotations(self) -> dict[str, str] | None:
        """The Lease annotations carrying the checkpoint; None keeps what the Lease has."""
        w = self.checkpoint()
        if w is None or w < self.inherited:
            return None
        return {CHECKPOINT_KEY: str(w), SCOPE_KEY: self.scope}
