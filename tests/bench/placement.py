"""Where a bench's stack runs on this machine's two cores, so that a figure measures what production
would see: all in one scheduling group (as the local stack runs), split over the two cores, or each
part in a CPU cgroup of its own weighted by its Kubernetes manifest's CPU request, as the kubelet
places pods.

Why the last: Linux shares a core fairly between the runnable entities of a group. With the whole
stack in one group, each of PostgreSQL's sixteen busy backends counts as much as the portal, which
then gets about a ninth of a core whatever it needs and waits for its turns. In a cluster the
database's processes are one pod among others, weighted by its request (the kubelet writes
``cpu.shares`` = millicores × 1024 / 1000 on cgroup v1), and the portal's pod gets its own share."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from deploy.local.stack import ROOT

CPU_CGROUP = Path("/sys/fs/cgroup/cpu")  # cgroup v1's cpu controller
GROUP_PREFIX = "bildungsraum-bench-"
CLIENTS_SHARES = 1024  # the load generator stands for visitors' browsers elsewhere: a core's weight


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (services, workers, the broker, PostgreSQL and its backends)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the field after the command's closing parenthesis: state, then the parent's pid
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cpu_ticks(pid: int, children: bool = False) -> int:
    """``/proc/<pid>/stat``'s user and system clock ticks; with ``children``, also those of its ended
    children (``cutime``/``cstime``, which the kernel adds to the parent that waited for them)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15 if children else 13])


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and system."""
    return _cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU time so far of ``root`` and every process below it, those that ended included (such as
    PostgreSQL's backends of closed connections, counted in the postmaster's ``cutime``)."""
    ticks = 0
    for pid in descendants(root) | {root}:
        try:
            ticks += _cpu_ticks(pid, children=True)
        except OSError:
            continue  # ended meanwhile: its parent's cutime holds it once waited for
    return ticks / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (a process's affinity is per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, OSError):
            continue


def _millicores(value: str | int | float) -> int:
    text = str(value)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def _cpu_requests(doc: dict | None) -> list[int]:
    """The CPU requests in one manifest: a Deployment's containers' times its replicas (the pods that run
    before any autoscaling), or an operator's resource's own."""
    if not doc:
        return []
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Deployment":  # each of its replicas
        resources = [c.get("resources", {}) for c in spec["template"]["spec"]["containers"]] * spec.get("replicas", 1)
    else:  # an operator's resource: one instance's (one primary, one broker node serves a request)
        resources = [spec.get("resources") or {}]
    return [_millicores(cpu) for r in resources if (cpu := r.get("requests", {}).get("cpu")) is not None]


# The platform's parts as the manifests run them, and which local process stands for each
PLATFORM = {"postgres": "platform/postgres/cluster.yaml", "broker": "platform/kafka/kafka.yaml",
            "redis": "platform/redis/redis.yaml", "keycloak": "platform/keycloak/keycloak.yaml"}
LOCAL_PART = {"dev-issuer": "keycloak", "celery-worker": "notifications", "celery-beat": "notifications"}


def requested_millicores(manifests: Path = ROOT / "deploy/k8s") -> dict[str, int]:
    """Each part's CPU request in the manifests, in millicores: a service's Deployments' pods summed (the
    local stack runs its API and events replicas as one process), and the platform's PostgreSQL, broker, Redis and
    Keycloak (the dev issuer stands in for it)."""
    requests: dict[str, int] = {}
    for path in sorted(manifests.glob("services/*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if found := _cpu_requests(doc):
                requests[path.parent.name] = requests.get(path.parent.name, 0) + sum(found)
    for part, path in PLATFORM.items():
        requests[part] = next(sum(found) for doc in yaml.safe_load_all((manifests / path).read_text())
                              if (found := _cpu_requests(doc)))
    return requests


def pods_missing() -> str | None:
    """Why ``Pods`` cannot run here, if it cannot."""
    if not (CPU_CGROUP / "cpu.shares").exists():
        return f"--pods needs cgroup v1's cpu controller at {CPU_CGROUP}, which this machine lacks"
    if not os.access(CPU_CGROUP, os.W_OK):
        return f"--pods needs the right to make cgroups in {CPU_CGROUP} (root)"
    return None


class Pods:
    """The stack's processes in CPU cgroups of their own, weighted as the kubelet would weigh their
    pods; undone by ``close``. Processes a part starts later (PostgreSQL's backends) inherit its group."""

    def __init__(self, processes: dict[str, subprocess.Popen], requests: dict[str, int] | None = None) -> None:
        if (missing := pods_missing()) is not None:
            raise SystemExit(missing)
        self.requests = requests or requested_millicores()
        self.groups: dict[str, Path] = {}
        for name, process in processes.items():
            part = LOCAL_PART.get(name, name)
            if part in self.requests:  # (the SMTP sink stands for the world outside: left where it is)
                for pid in sorted({process.pid} | descendants(process.pid)):
                    self._move(pid, part, self.requests[part] * 1024 // 1000)

    def _group(self, part: str, shares: int) -> Path:
        group = self.groups.get(part)
        if group is None:
            group = CPU_CGROUP / f"{GROUP_PREFIX}{part}"
            group.mkdir(exist_ok=True)
            (group / "cpu.shares").write_text(str(max(shares, 2)))
            self.groups[part] = group
        return group

    def _move(self, pid: int, part: str, shares: int) -> None:
        try:
            (self._group(part, shares) / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            pass  # ended meanwhile

    def clients(self) -> Callable[[], None]:
        """For ``subprocess``'s ``preexec_fn``: the load generator into a group of its own."""
        procs = self._group("clients", CLIENTS_SHARES) / "cgroup.procs"
        return lambda: procs.write_text(str(os.getpid()))

    def describe(self) -> str:
        return ", ".join(f"{part} {(g / 'cpu.shares').read_text().strip()}" for part, g in sorted(self.groups.items()))

    def close(self) -> None:
        for group in self.groups.values():
            _move_all((group / "cgroup.procs").read_text().split(), CPU_CGROUP / "cgroup.procs")
            group.rmdir()
        self.groups.clear()


def _move_all(pids: Iterable[str], procs: Path) -> None:
    for pid in pids:
        try:
            procs.write_text(pid)
        except ProcessLookupError:
            pass
