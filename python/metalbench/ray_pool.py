"""The sweep's worker side on a Ray cluster: the same jobs, run by Ray actors.

With the optional extra (`pip install metalbench[ray]`), `metalbench run --ray
ADDRESS` hands the pairs to one actor per GPU of the cluster (`num_gpus=1`, so Ray
places them and sets each one's visible device) or, for a backend Ray cannot count
(OpenCL, Metal), to `--workers` actors of one CPU each. Each actor holds a device
and measures one pair per call (worker.py's protocol); results come back to the
process that started the run, which stores them as they arrive.

Ray does the scheduling, the placement and the restarts: an actor whose process
dies (a crashing kernel, or its node failing) is restarted by Ray
(`max_restarts=-1`), and the pair it was on is stored as `crashed`. Calls are not
retried (`max_task_retries=0`): a kernel that crashes its process would crash it
again. A pair that overruns --timeout has its actor killed and restarted, and is
stored as `timeout`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .backends import TRAITS
from .measure import Worker
from .pool import DeviceLost, Job, Message, PeakUnavailable, Progress, WorkerError, ahead, pick
from .results import Category, Result, Status, lost_measure
from .settings import Settings
from .worker import JobRunner

__all__ = ["RayPool", "ray_available"]

# Longest wait between checks of deadlines and of Ctrl-C, in seconds.
_TICK = 0.2


def ray_available() -> str:
    """'' when Ray can be imported, else what to install."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed: pip install 'metalbench[ray]'"
    return ""


# Seconds --ray ADDRESS has to answer: ray.init retries an address where nothing
# answers for ever (its GCS client waits, gives up, and starts again).
CONNECT_TIMEOUT = 30.0


def reachable(address: str, timeout: float = 5.0) -> None:
    """BackendError unless something accepts a TCP connection at `address` ('host:port',
    'ray://host:port'); 'auto' and addresses without a port are left to Ray."""
    import socket

    from .backends import BackendError

    host_port = address.split("://", 1)[-1]
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdecimal():
        return
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return
    except OSError as e:
        raise BackendError(f"--ray {address}: nothing answers there ({e.strerror or type(e).__name__}); start a "
                           "Ray head there (ray start --head) or give its address") from None


def _init_within(ray: Any, seconds: float, **kwargs: Any) -> None:
    """ray.init, or BackendError when it has not connected within `seconds` (something
    answers at the address, but not a Ray cluster that can be joined)."""
    import threading

    from .backends import BackendError

    done: list[BaseException | None] = []

    def connect() -> None:
        try:
            ray.init(**kwargs)
            done.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            done.append(e)

    thread = threading.Thread(target=connect, name="metalbench-ray-init", daemon=True)
    thread.start()
    thread.join(seconds)
    if not done:
        raise BackendError(f"--ray {kwargs.get('address')}: no Ray cluster answered within {seconds:g} s")
    if done[0] is not None:
        raise BackendError(f"--ray {kwargs.get('address') or 'local'}: Ray could not start or connect: "
                           f"{str(done[0]).splitlines()[0] if str(done[0]) else type(done[0]).__name__}") from None


class _Actor:
    """Lives in a Ray worker process: one device, and the spec prepared last."""

    def __init__(self, backend: str, settings: Settings) -> None:
        self.worker = Worker(backend, 0)  # Ray makes the actor's device the first it sees
        self.messages: list[tuple] = []
        self.runner = JobRunner(self.worker, settings, self.messages.append)

    def info(self) -> dict:
        return self.worker.info

    def peak(self) -> tuple[float, str] | str:
        return self.runner.peak()

    def run(self, job: Job) -> list[tuple]:
        self.messages.clear()
        self.runner.run(job)
        return list(self.messages)


class RayPool:
    """pool.Pool on a Ray cluster at `address` ('auto', 'local' for a new instance on this
    machine, or an address `ray.init` takes), one pair per call, with spec affinity."""

    def __init__(self, backend: str, settings: Settings, timeout: float, address: str, workers: int) -> None:
        missing = ray_available()
        if missing:
            raise DeviceLost(missing)
        import ray

        self.ray = ray
        self.backend, self.settings, self.timeout, self.address, self.workers = (
            backend, settings, timeout, address, workers)
        self.actors: list[Any] = []
        self.holds: dict[int, int] = {}  # id(actor) -> the spec index it prepared last
        self.started = False  # ray.init was called here, so shutdown is ours too
        self.info: dict | None = None
        self.nodes: dict[int, int] = {}  # pair id -> the cluster's live nodes when it was sent

    @property
    def share(self) -> int:
        return max(1, len(self.actors))

    def begin(self) -> None:
        """Nothing to start ahead: describe() starts the actors, whose info a run needs first."""

    def describe(self) -> dict:
        if self.info is not None:
            return self.info
        ray = self.ray
        if not ray.is_initialized():
            # 'local' starts an instance of this machine's own, with a CPU for each worker.
            local = self.address == "local"
            if local:
                # Here, not in a thread of its own: the processes a local instance starts die with
                # the thread that started them.
                ray.init(address=None, num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            else:
                reachable(self.address)
                _init_within(ray, CONNECT_TIMEOUT, address=self.address, include_dashboard=False,
                             log_to_driver=False)
            self.started = True
        if TRAITS[self.backend].ray_gpus:
            count = int(ray.cluster_resources().get("GPU", 0))
            if count == 0:
                raise DeviceLost(f"the Ray cluster at {self.address} has no GPU for {self.backend}")
            resources = {"num_gpus": 1}
        else:
            # One CPU each, spread over the cluster's nodes: each node's actors share its devices.
            count, resources = self.workers, {"num_cpus": 1, "scheduling_strategy": "SPREAD"}
        actor = ray.remote(max_restarts=-1, max_task_retries=0, **resources)(_Actor)
        self.actors = [actor.remote(self.backend, self.settings) for _ in range(count)]
        try:
            self.info = ray.get(self.actors[0].info.remote(), timeout=max(self.timeout, 120.0))
        except Exception as e:  # noqa: BLE001 - any failure to open the device ends the run
            raise DeviceLost(f"a Ray actor could not open {self.backend} device 0: {e}") from None
        return self.info

    def measure_peak(self) -> tuple[float, str]:
        self.describe()
        try:
            found = self.ray.get(self.actors[0].peak.remote(), timeout=self.timeout)
        except Exception as e:  # noqa: BLE001 - a dead or overrunning actor: no peak, the run goes on
            raise PeakUnavailable(f"the read-bandwidth kernel's Ray actor failed ({type(e).__name__})") from None
        if isinstance(found, str):
            raise PeakUnavailable(found)
        return found

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, Result], Iterable[Job]],
            on_note: Callable[[str], None], on_progress: Progress | None = None) -> None:
        """Runs every job, one pair per call; calls `on_result` for every pair as it is answered,
        and runs the jobs it returns next, with spec affinity (pool.pick)."""
        ray = self.ray
        self.describe()
        queue: deque[Job] = deque(single for job in jobs for single in _pairs(job))
        busy: dict[Any, tuple[Any, Job, float]] = {}  # call -> (actor, job, deadline)
        while queue or busy:
            idle = [a for a in self.actors if all(a is not held for held, _, _ in busy.values())]
            for actor in idle:
                others = [s for a, s in self.holds.items() if a != id(actor)]
                job = pick(queue, self.holds.get(id(actor)), others)
                if job is None:
                    break
                self.holds[id(actor)] = job.spec_index
                self.nodes[job.pairs[0].id] = self._alive_nodes()
                busy[actor.run.remote(job)] = (actor, job, time.monotonic() + self.timeout)
                if on_progress is not None:  # an actor's messages come back with its answer: begun when sent
                    on_progress(job, Message.BEGIN, job.pairs[0].id, self.actors.index(actor))
            ready, _ = ray.wait(list(busy), num_returns=1, timeout=_TICK)
            for call in ready:
                actor, job, _ = busy.pop(call)
                ahead(queue, [one for new in self._answer(call, actor, job, on_result, on_note) for one in _pairs(new)])
            now = time.monotonic()
            for call, (actor, job, deadline) in list(busy.items()):
                if now > deadline:
                    del busy[call]
                    self.holds.pop(id(actor), None)
                    ray.kill(actor, no_restart=False)  # Ray starts it again
                    blamed = _blamed(job, Status.TIMEOUT, f"took longer than {self.timeout:g} s (--timeout); its "
                                                          "Ray actor was restarted", now - deadline + self.timeout)
                    ahead(queue, [one for new in on_result(job, blamed) for one in _pairs(new)])

    def _alive_nodes(self) -> int:
        return sum(1 for node in self.ray.nodes() if node.get("Alive"))

    def _node_lost(self, error: BaseException, alive_when_sent: int) -> bool:
        """Whether an actor died with its node (removed, drained, failed) rather than by its
        kernel: Ray says so in the error, or the cluster has fewer live nodes than when the
        pair was sent."""
        text = str(error).lower()
        if "node" in text and any(word in text for word in ("died", "dead", "removed", "drain", "preempt")):
            return True
        return bool(getattr(error, "preempted", False)) or self._alive_nodes() < alive_when_sent

    def _answer(self, call: Any, actor: Any, job: Job, on_result: Callable[[Job, Result], Iterable[Job]],
                on_note: Callable[[str], None]) -> list[Job]:
        ray = self.ray
        try:
            messages = ray.get(call)
        except ray.exceptions.RayActorError as e:
            self.holds.pop(id(actor), None)
            if isinstance(e, getattr(ray.exceptions, "ActorUnavailableError", ())):
                # Sent to an actor Ray is restarting (its node, or its last kernel, took it down):
                # nothing of this pair's is to blame; it is sent again, in a moment.
                time.sleep(_TICK)
                return [job]
            if not job.retried and self._node_lost(e, self.nodes.get(job.pairs[0].id, 0)):
                # A node left the cluster while the pair ran there: the node's loss, not the
                # kernel's. The pair goes to another actor, once; a second death blames it.
                on_note(f"a Ray node left the cluster while it measured {job.pairs[0].variant.id} on "
                        f"{job.spec.label()}; measuring it on another node")
                return [replace(job, retried=True)]
            why = next((line.strip() for line in reversed(str(e).splitlines()) if line.strip()), "")
            return list(on_result(job, _blamed(job, Status.CRASHED, f"its Ray actor died ({type(e).__name__}: "
                                                                    f"{why[:200]}); Ray restarted it")))
        except ray.exceptions.RayTaskError as e:
            raise WorkerError(str(e)) from None
        new: list[Job] = []
        for message in messages:
            if message[0] == Message.RESULT:
                new.extend(on_result(job, message[2]))
            elif message[0] == Message.NOTE:
                on_note(message[1])
            elif message[0] == Message.LOST:  # its device stopped working: a new process gets a new one
                on_note(f"{message[1]}; Ray restarts its actor")
                self.holds.pop(id(actor), None)
                ray.kill(actor, no_restart=False)
        return new


def _pairs(job: Job) -> list[Job]:
    return [replace(job, pairs=[pair]) for pair in job.pairs]


def _blamed(job: Job, status: Status, message: str, ran: float | None = None) -> Result:
    pair = job.pairs[0]
    return Result(variant=pair.variant.id, spec_key=job.spec.key(), status=status, category=Category(status.value),
                  message=message, key=pair.key, detail=pair.detail,
                  measure=None if ran is None else lost_measure(ran))
