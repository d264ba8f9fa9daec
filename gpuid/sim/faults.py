"""Fault injection: the failures gpuid must survive, switchable from a test.

Real clusters compact etcd (watches get 410), restart API servers (streams
end mid-flight), shed load (429) and fail (5xx), and kubelets hang or lose
binaries. Each of those is one call here, so a test can name the failure it
provokes. The state lives on the cluster object (``SimCluster`` inherits
this) because tests hold the cluster; the HTTP layer only reads it.
``request_counts`` is the other side of the same coin: it lets benchmarks
measure how much load a client puts on the API server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gpuid.sim.events import EventLog


@dataclass(frozen=True, slots=True)
class ExecBehaviour:
    """How exec into one pod misbehaves; the default is a healthy kubelet."""

    delay: float = 0.0  # seconds before any output
    hang: bool = False  # never answer; the stream ends only when the client (or server) goes away
    exit_code: int = 0  # non-zero overrides the command's own exit code
    stderr: bytes = b""  # appended to the command's stderr
    stdout: bytes | None = None  # replaces the command's stdout
    missing_smi: bool = False  # nvidia-smi is not on PATH in this container


@dataclass(slots=True)
class _FailureRule:
    remaining: int
    status: int
    path_contains: str
    retry_after: int | None


@dataclass(frozen=True, slots=True)
class Failure:
    """An injected failure as the server answers it: the status and its ``Retry-After`` (if any)."""

    status: int
    retry_after: int | None


class FaultControls:
    """Switches for the failures above, plus request accounting."""

    _log: EventLog

    def __init__(self) -> None:
        self.request_counts: Counter[str] = Counter()
        self._failures: list[_FailureRule] = []
        self._exec: dict[tuple[str, str], ExecBehaviour] = {}
        self.watch_epoch = 0  # bumped by drop_watches(); open watches compare it
        self.watch_drop_reset = False

    def compact(self) -> int:
        """Forget the event history: watches (and continue tokens) from an older rv get 410 Expired.

        Returns the resourceVersion that is now the oldest a watch may resume from.
        """
        return self._log.compact()

    def drop_watches(self, *, reset: bool = False) -> None:
        """End every open watch stream now.

        ``reset=False`` ends each chunked response cleanly, like an API server
        closing watches on shutdown (the client sees end of stream);
        ``reset=True`` aborts the TCP connection mid-response, like a crashed
        server or a load balancer cutting it (the client sees a payload error).
        """
        self.watch_epoch += 1
        self.watch_drop_reset = reset
        self._log.notify()

    def fail_requests(
        self, n: int, status: int = 500, path_contains: str = "", *, retry_after: int | None = None
    ) -> None:
        """Answer the next ``n`` requests whose path and query contain ``path_contains`` with ``status``.

        The body is a Kubernetes ``Status``; 429 also carries ``Retry-After: 1``
        (``retry_after`` seconds when given, on any status, as API servers
        shedding load do). Matching is against ``request.path_qs`` (e.g.
        ``"watch=True"``, ``"/exec"``, ``"/nodes/"``).
        """
        if n < 0 or not 400 <= status <= 599:
            raise ValueError("fail_requests needs n >= 0 and a 4xx/5xx status")
        if retry_after is None and status == 429:
            retry_after = 1
        self._failures.append(_FailureRule(n, status, path_contains, retry_after))

    @property
    def pending_failures(self) -> int:
        """Injected request failures not consumed yet."""
        return sum(rule.remaining for rule in self._failures)

    def clear_failures(self) -> None:
        """Forget every injected request failure not consumed yet (the API server recovers)."""
        self._failures = []

    def take_failure(self, path_qs: str) -> Failure | None:
        """How to fail this request, consuming one injected failure (server side)."""
        for rule in self._failures:
            if rule.remaining > 0 and rule.path_contains in path_qs:
                rule.remaining -= 1
                return Failure(rule.status, rule.retry_after)
        self._failures = [r for r in self._failures if r.remaining > 0]
        return None

    def set_exec(
        self,
        name: str,
        *,
        namespace: str = "gpu-operator",
        delay: float = 0.0,
        hang: bool = False,
        exit_code: int = 0,
        stderr: bytes = b"",
        stdout: bytes | None = None,
        missing_smi: bool = False,
    ) -> None:
        """Make exec into pod ``namespace/name`` misbehave; calling with only defaults heals it."""
        behaviour = ExecBehaviour(delay, hang, exit_code, stderr, stdout, missing_smi)
        if behaviour == ExecBehaviour():
            self._exec.pop((namespace, name), None)
        else:
            self._exec[(namespace, name)] = behaviour

    def exec_behaviour(self, namespace: str, name: str) -> ExecBehaviour:
        return self._exec.get((namespace, name), ExecBehaviour())
