"""How many threads adamc uses by default, and threadpoolctl's view of them.

At import the limit comes from, in order: ``ADAMC_NUM_THREADS``, ``OMP_NUM_THREADS``
(its first value), else the CPUs this process may run on: the affinity mask
(``taskset``, Slurm's binding) and the cgroup CPU quota (containers, Slurm's
``--cpus-per-task`` with cgroups), whichever is smaller. ``ADAMC_THREAD_POLICY``
chooses between the adaptive policy (the default: several threads only where they were
measured to be faster) and ``fixed`` (always several threads from the size threshold
on). Nothing here changes another library's settings: the variables are only read.
"""
from __future__ import annotations

import math
import os
import warnings

from .. import _kernels
from .._version import __version__

__all__ = ["configure", "reason", "cpu_limit"]

_reason = ""
_configured = 0


def _cgroup_quota(root: str = "/sys/fs/cgroup", proc_self: str = "/proc/self/cgroup"
                  ) -> tuple[float, str] | None:
    """The cgroup CPU quota of this process in CPUs (the smallest along its path up the
    hierarchy), with the file it came from, or None when there is none."""
    try:
        with open(proc_self) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best: tuple[float, str] | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        path = path.strip("/")
        candidates: list[tuple[str, str, str | None]]
        if controllers == "":  # cgroup v2: cpu.max holds "quota period" or "max period"
            candidates = [(os.path.join(root, *p), "cpu.max", None) for p in _ancestors(path)]
        elif "cpu" in controllers.split(","):  # cgroup v1
            mount = next((os.path.join(root, d) for d in ("cpu,cpuacct", "cpu", "cpuacct,cpu")
                          if os.path.isdir(os.path.join(root, d))), None)
            if mount is None:
                continue
            candidates = [(os.path.join(mount, *p), "cpu.cfs_quota_us", "cpu.cfs_period_us")
                          for p in _ancestors(path)]
        else:
            continue
        for directory, quota_file, period_file in candidates:
            cpus = _read_quota(directory, quota_file, period_file)
            if cpus is not None and (best is None or cpus < best[0]):
                best = (cpus, os.path.join(directory, quota_file))
    return best


def _ancestors(path: str) -> list[list[str]]:
    parts = [p for p in path.split("/") if p]
    return [parts[:k] for k in range(len(parts), -1, -1)]


def _read_quota(directory: str, quota_file: str, period_file: str | None) -> float | None:
    try:
        with open(os.path.join(directory, quota_file)) as f:
            fields = f.read().split()
        if period_file is None:
            quota, period = fields[0], fields[1] if len(fields) > 1 else "100000"
        else:
            quota = fields[0]
            with open(os.path.join(directory, period_file)) as f:
                period = f.read().split()[0]
        if quota == "max" or int(quota) <= 0 or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, IndexError):
        return None


def cpu_limit(root: str = "/sys/fs/cgroup", proc_self: str = "/proc/self/cgroup"
              ) -> tuple[int, str]:
    """CPUs this process may use (affinity mask and cgroup quota) and why."""
    try:
        affinity = len(os.sched_getaffinity(0))
        why = f"{affinity} CPU{'s' if affinity != 1 else ''} in the affinity mask"
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
        why = f"{affinity} CPU{'s' if affinity != 1 else ''}"
    quota = _cgroup_quota(root, proc_self)
    if quota is None:
        return affinity, why + ", no cgroup CPU quota"
    cpus = max(1, math.ceil(quota[0] - 1e-9))
    if cpus < affinity:
        return cpus, f"cgroup CPU quota of {quota[0]:g} CPUs ({quota[1]}); {why}"
    return affinity, why + f", cgroup CPU quota {quota[0]:g} CPUs"


def _from_variable(name: str, value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    first = value.split(",")[0].strip()  # OMP_NUM_THREADS may list nested levels
    try:
        n = int(first)
    except ValueError:
        n = 0
    if n < 1:
        warnings.warn(f"{name}={value!r} is not a positive integer; ignored",
                      RuntimeWarning, stacklevel=3)
        return None
    return n


def default_threads(environ=None, root: str = "/sys/fs/cgroup",
                    proc_self: str = "/proc/self/cgroup") -> tuple[int, str]:
    """The thread limit adamc starts with, and why."""
    environ = os.environ if environ is None else environ
    for name in ("ADAMC_NUM_THREADS", "OMP_NUM_THREADS"):
        n = _from_variable(name, environ.get(name))
        if n is not None:
            return n, f"{name}={environ[name]}"
    return cpu_limit(root, proc_self)


def _policy_from(environ) -> tuple[str, str]:
    value = environ.get("ADAMC_THREAD_POLICY", "").strip().lower()
    if not value:
        return "adaptive", "the default"
    if value not in _kernels.THREAD_POLICIES:
        warnings.warn(f"ADAMC_THREAD_POLICY={value!r} is not one of "
                      f"{', '.join(_kernels.THREAD_POLICIES)}; using 'adaptive'",
                      RuntimeWarning, stacklevel=3)
        return "adaptive", "the default"
    return value, f"ADAMC_THREAD_POLICY={value}"


def configure(environ=None) -> None:
    """Set the limit and policy from the environment (called once at import)."""
    global _reason, _configured
    environ = os.environ if environ is None else environ
    n, why = default_threads(environ)
    policy, policy_why = _policy_from(environ)
    if not _kernels.have_threads():
        n, why = 1, "built without threads"
    _kernels.set_num_threads(n)
    _kernels._set_thread_policy(policy)
    _configured = _kernels.get_num_threads()
    _reason = f"{why}; policy {policy} ({policy_why})"


def reason() -> str:
    """Why the thread limit and policy are what they are (for show_config)."""
    if _kernels.get_num_threads() != _configured:
        return ("changed at run time by set_num_threads or threadpoolctl "
                f"(at import: {_configured}, {_reason})")
    return _reason


def _register_with_threadpoolctl() -> None:
    """Let threadpoolctl list adamc and limit it, when threadpoolctl is installed."""
    try:
        import threadpoolctl
    except ImportError:
        return
    if not hasattr(threadpoolctl, "register") or not hasattr(threadpoolctl, "LibController"):
        return  # threadpoolctl < 3.5 has no third-party controllers

    class AdamcController(threadpoolctl.LibController):
        """adamc's kernels' thread limit, as threadpoolctl sees it."""

        user_api = "adamc"
        internal_api = "adamc"
        filename_prefixes = ("_kernels",)
        check_symbols = ("adamc_get_num_threads", "adamc_set_num_threads",
                         "adamc_get_adaptive")

        def get_num_threads(self):
            return self.dynlib.adamc_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.adamc_set_num_threads(int(num_threads))

        def get_version(self):
            return __version__

        def set_additional_attributes(self):
            # Called before threadpoolctl checks the symbols: another library's
            # "_kernels" module must not make threadpool_info() fail.
            adaptive = getattr(self.dynlib, "adamc_get_adaptive", None)
            if adaptive is not None:
                self.thread_policy = "adaptive" if adaptive() else "fixed"

    if not any(getattr(c, "internal_api", None) == "adamc"
               for c in getattr(threadpoolctl, "_ALL_CONTROLLERS", [])):
        threadpoolctl.register(AdamcController)
