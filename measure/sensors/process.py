"""This process tree's CPU time and memory, through psutil, and the machine's busy CPU time.

Domain ``process``, channels:

- ``cpu_s``: cumulative CPU seconds (user + system) of this process and its
  descendants (see "Whose CPU time" below): this process's own since it
  started, each descendant's from its first reading.  Only differences mean
  something, such as ``cpu_s(end) - cpu_s(start)``, the tree's CPU time over
  a window.  This process's own time comes from ``time.process_time``
  (nanosecond resolution), descendants' from psutil (clock-tick resolution,
  10 ms).
- ``cpu_share``: the growth of ``cpu_s`` per wall second (monotonic clock)
  since the previous read, or since the sensor opened for the first read;
  0..logical CPUs.
- ``rss_mib``: resident memory of the tree, MiB (this process's read from
  ``/proc/<pid>/statm`` through a descriptor kept open: psutil's
  ``memory_info().rss`` without reopening the file at every read); ``None``
  where a descendant's is unreadable.
- ``uss_mib``: unique memory of the tree (``memory_full_info().uss``), MiB;
  ``None`` where a process's is unreadable.

Domain ``host``, channel ``busy_cpu_s``: cumulative busy CPU seconds of the
whole machine, summed over its CPUs, from ``/proc/stat`` with psutil's
conventions (``procstat.busy_total``), clock-tick resolution.  Set against
``process.cpu_s`` over a window, it shows how much of the machine other
processes kept busy.  The domain's details give ``logical_cpus`` and
``min_interval_s``: ticks read ``/proc/stat`` at most this often
(``procstat.MIN_INTERVAL_S``, 50 ms) and repeat the last value in between;
the window's edges always read it.  Where ``/proc/stat`` cannot be read when
the sensor opens, the domain is left out and reported in ``unavailable``
(``process:host``).

Whose CPU time.  The tree's CPU time is accumulated reading by reading, in
capture order: this process's own time and the time of its children it has
reaped (``os.times()``'s ``children_*``), and, for each listed descendant,
what its user + system time and its reaped children's time grew by since its
previous reading.  A descendant therefore counts from its first reading: what
it ran before (before the window, say) is never counted.  A descendant that
exits is reaped by its parent, which is this process or another listed
descendant (its children are listed with it), and its total time then moves
into that parent's ``children_*``; so when a descendant is found gone, its
total at its last reading (already counted from its first reading, or before
it) is set against the next growth of the tree's reaped time, and only the
rest, what it ran after its last reading, is added: nothing counted twice,
nothing it ran while listed lost.  A child started and reaped between two
listings is counted in full when it is reaped.  Parents are read before their
children, so a reap that falls between two reads of one capture shows up at
the next capture rather than twice.  Assumed: a descendant that exits is
reaped inside the tree; one orphaned first (its parent exited before it) is
reaped by init, and its total then offsets reaps that come later.  A
descendant that leaves the tree while running (reparented) stops being read
at the next listing and keeps what it was counted.

Listing descendants walks the whole process table (about a millisecond on a
machine running a hundred processes, and a system call per process that lets
the inference thread take the GIL) and USS walks page tables (about 13 ms per
GiB resident): too slow for every sample.  Descendants are listed at most
every ``refresh_s`` (in the domain's details), through psutil only when the
kernel's per-thread ``children`` lists show that this process has a child,
and always by ``before_window()``, which the recorder calls right before each
window: a descendant running when a window starts is read at its ``start``
sample; one started during a window is read from the next listing (the
recorder's thread ticks refresh before each tick; its loop and signal ticks
never do inside the window).  USS is read at most every ``refresh_s`` too, and never
more than ``MAX_USS_DUTY`` of the time: after a read that took d seconds the
next waits at least d / ``MAX_USS_DUTY`` (13 s for a process of 1 GiB).  Reads
in between reuse the last list and USS.  ``refresh()`` does what is due of
both; ``read()`` calls it.  ``capture()`` takes the raw counters and
``decode()`` turns them into the channels (``sensors.base``); the recorder's
ticks use ``capture_tick()``, which reads this process's RSS
(``/proc/<pid>/statm``, ~10 µs while a model runs) at most every
``MEMORY_INTERVAL_S`` (50 ms) and repeats it in between, and ``/proc/stat``
at most every ``procstat.MIN_INTERVAL_S``.

A failure costs only what it touches: a descendant whose CPU times cannot be
read (other than because it exited) voids the CPU and RSS channels of that
reading, an unreadable ``statm`` the RSS, an unreadable ``/proc/stat`` the
host's busy time; ``decode`` then raises ``SensorError`` carrying the
channels it could compute.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import psutil

from .base import MEASURED, Domain, Sensor, SensorError, Unavailable
from .procstat import MIN_INTERVAL_S, ProcStatTimes, busy_total

NAME = "process"
CHANNELS = ("process.cpu_s", "process.cpu_share", "process.rss_mib", "process.uss_mib")
HOST_CHANNELS = ("host.busy_cpu_s",)
MAX_USS_DUTY = 0.001  # at most 0.1 % of the time spent reading USS
MEMORY_INTERVAL_S = 0.05  # the recorder's ticks read this process's RSS at most this often
_MIB = 2**20
_PAGE_B = os.sysconf("SC_PAGE_SIZE")


class ProcessSensor(Sensor):
    """CPU time and memory of this process and its descendants, and the machine's busy CPU time."""

    name = NAME

    def __init__(self, refresh_s: float = 1.0, proc_stat: ProcStatTimes | None = None,
                 host_unavailable: str | None = None):
        """``proc_stat`` reads the machine's CPU times, ``None`` with ``host_unavailable`` saying why not."""
        self._me = psutil.Process()
        self._statm = open(f"/proc/{self._me.pid}/statm", "rb", buffering=0)
        self._tasks = f"/proc/{self._me.pid}/task"
        self._refresh_s = refresh_s
        self._listed_at = -math.inf
        self._uss_at = -math.inf
        self._uss_wait_s = refresh_s
        self._descendants: list[psutil.Process] = []  # read at every capture, parents before their children
        self._gone: set[psutil.Process] = set()  # descendants a capture found gone
        self._uss_mib: float | None = None
        self._proc_stat = proc_stat
        domains = [Domain(NAME, NAME, MEASURED, CHANNELS, details={"refresh_s": refresh_s})]
        if proc_stat is not None:
            domains.append(Domain("host", NAME, MEASURED, HOST_CHANNELS, details={
                "logical_cpus": psutil.cpu_count(logical=True), "min_interval_s": MIN_INTERVAL_S}))
        else:
            self.unavailable = {f"{NAME}:host": host_unavailable}
        self.domains = tuple(domains)
        self.channels = tuple(channel for domain in domains for channel in domain.channels)
        self._statm_raw: bytes | OSError = b""
        self._statm_at = -math.inf
        self._stat_raw: bytes | OSError | None = None
        self._stat_at = -math.inf
        # the decoder's state: the tree's CPU seconds so far, and what they were accumulated from
        self._cpu_s = 0.0
        self._own: tuple[float, float] | None = None  # this process's own and reaped CPU seconds, last decoded
        self._previous: dict[psutil.Process, tuple[float, float]] = {}  # a descendant's own and reaped, last read
        self._absorb_s = 0.0  # totals of descendants found gone, to set against the tree's next reaped time
        self._refresh(time.monotonic(), force=True)
        self._last_t, self._last_cpu_s = self._accumulate(self.capture())

    def refresh(self) -> None:
        """List descendants and read USS, each when due."""
        self._guarded_refresh(force=False)

    def before_window(self) -> None:
        """List descendants now, so that each one running is read at the window's ``start`` sample."""
        self._guarded_refresh(force=True)

    def read(self) -> dict[str, float | None]:
        self.refresh()
        return self.decode(self.capture())

    def capture(self) -> tuple:
        """The clock, this process's CPU and memory counters, the listed descendants', the last USS and the
        machine's CPU times."""
        now = time.monotonic()
        self._statm_raw, self._statm_at = self._read_statm(), now
        self._stat_raw, self._stat_at = self._read_stat(), now
        return self._counters(now)

    def capture_tick(self) -> tuple:
        """As ``capture``, but this process's memory counters read at most every ``MEMORY_INTERVAL_S``
        and the machine's CPU times at most every ``MIN_INTERVAL_S`` (the previous ones in between): the
        CPU clocks move with every kernel, memory with allocations, ``/proc/stat`` in 10 ms ticks."""
        now = time.monotonic()
        if now - self._statm_at >= MEMORY_INTERVAL_S:
            self._statm_raw, self._statm_at = self._read_statm(), now
        if now - self._stat_at >= MIN_INTERVAL_S:
            self._stat_raw, self._stat_at = self._read_stat(), now
        return self._counters(now)

    def decode(self, raw: tuple) -> dict[str, float | None]:
        """The tree's CPU time so far and its share since the previous decoded reading, memory, the
        machine's busy CPU time; ``SensorError`` with the channels it could compute when part of the
        reading failed."""
        _, _, _, statm, descendants, uss_mib, stat = raw
        errors = [f"process {p.pid}: {r}" for p, r in descendants if isinstance(r, Exception)]
        now, cpu_s = self._accumulate(raw)
        values: dict[str, float | None] = {"process.uss_mib": uss_mib}
        if not errors:
            elapsed_s = now - self._last_t
            values["process.cpu_s"] = cpu_s
            values["process.cpu_share"] = (cpu_s - self._last_cpu_s) / elapsed_s if elapsed_s > 0 else None
            self._last_cpu_s, self._last_t = cpu_s, now
        if isinstance(statm, OSError):
            errors.append(f"statm: {statm}")
        elif not errors:
            rss = [r[2] for _, r in descendants if r is not None]
            values["process.rss_mib"] = None if None in rss else (int(statm.split()[1]) * _PAGE_B + sum(rss)) / _MIB
        if isinstance(stat, OSError):
            errors.append(f"/proc/stat: {stat}")
        elif self._proc_stat is not None:
            try:
                values["host.busy_cpu_s"] = busy_total(self._proc_stat.parse(stat))[0]
            except ValueError as err:
                errors.append(f"/proc/stat: {err}")
        if errors:
            raise SensorError(f"process: {'; '.join(errors)}", values)
        return values

    def close(self) -> None:
        self._statm.close()
        if self._proc_stat is not None:
            self._proc_stat.close()
            self._proc_stat = None

    def _read_statm(self) -> bytes | OSError:
        try:
            return os.pread(self._statm.fileno(), 256, 0)
        except OSError as err:
            return err

    def _read_stat(self) -> bytes | OSError | None:
        if self._proc_stat is None:
            return None
        try:
            return self._proc_stat.raw()
        except OSError as err:
            return err

    def _counters(self, now: float) -> tuple:
        """The raw reading: this process's counters first, then its descendants', parents before children."""
        times = os.times()
        descendants = [(child, self._descendant_counters(child)) for child in self._descendants] \
            if self._descendants else []  # most often none: no comprehension to run at every tick
        return (now, time.process_time(), times.children_user + times.children_system, self._statm_raw,
                descendants, self._uss_mib, self._stat_raw)

    def _descendant_counters(self, child: psutil.Process) -> tuple | Exception | None:
        """A descendant's own and reaped CPU seconds and RSS bytes (``None`` where unreadable); ``None`` once
        it exited; the error where its CPU times cannot be read."""
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            self._gone.add(child)
            return None
        except (psutil.Error, OSError) as err:
            return err
        try:
            rss_b = child.memory_info().rss
        except psutil.NoSuchProcess:
            rss_b = 0  # exited since: its memory is freed
        except (psutil.Error, OSError):
            rss_b = None
        return times.user + times.system, times.children_user + times.children_system, rss_b

    def _accumulate(self, raw: tuple) -> tuple[float, float]:
        """Add what the tree ran since the previous decoded reading (see the module's docstring); the
        reading's clock and the tree's CPU seconds so far."""
        now, own_s, own_reaped_s, _, descendants, _, _ = raw
        if self._own is None:  # the sensor's first reading: this process's own and reaped time so far
            ran_s, reaped_s = own_s + own_reaped_s, 0.0
        else:
            ran_s, reaped_s = own_s - self._own[0], own_reaped_s - self._own[1]
        self._own = own_s, own_reaped_s
        for child, reading in descendants:
            if reading is None:  # gone: its total moves to its parent's reaped time
                last = self._previous.pop(child, None)
                if last is not None:
                    self._absorb_s += last[0] + last[1]
            elif not isinstance(reading, Exception):
                child_s, child_reaped_s, _ = reading
                last = self._previous.get(child)
                if last is not None:  # first reading: counted from here
                    ran_s += child_s - last[0]
                    reaped_s += child_reaped_s - last[1]
                self._previous[child] = child_s, child_reaped_s
        absorbed = min(self._absorb_s, reaped_s)
        self._absorb_s -= absorbed
        self._cpu_s += ran_s + reaped_s - absorbed
        return now, self._cpu_s

    def _guarded_refresh(self, force: bool) -> None:
        try:
            self._refresh(time.monotonic(), force)
        except psutil.Error as err:
            raise SensorError(f"process: {err}") from err

    def _refresh(self, now: float, force: bool) -> None:
        if force or now - self._listed_at >= self._refresh_s:
            listed = self._me.children(recursive=True) if self._has_children() else []
            known = set(listed)
            # a descendant no longer listed is read until a capture finds it gone, unless it still runs
            # (reparented out of the tree): then it keeps what it was counted
            unlisted = [p for p in self._descendants if p not in known and p not in self._gone]
            self._descendants = listed + [p for p in unlisted if not p.is_running()]
            self._gone = set()
            self._listed_at = now
        if now - self._uss_at >= self._uss_wait_s:
            self._uss_mib = self._tree_uss_mib()
            self._uss_at = now
            self._uss_wait_s = max(self._refresh_s, (time.monotonic() - now) / MAX_USS_DUTY)

    def _has_children(self) -> bool:
        """Whether a thread of this process has a child: a few small reads instead of psutil's walk of
        every process; True where the kernel has no ``/proc/<pid>/task/<tid>/children`` or a thread
        ended meanwhile, so that psutil decides."""
        try:
            for tid in os.listdir(self._tasks):
                with open(f"{self._tasks}/{tid}/children", "rb") as children:
                    if children.read(1):
                        return True
        except OSError:
            return True
        return False

    def _tree_uss_mib(self) -> float | None:
        uss_b = 0
        for p in [self._me, *self._descendants]:
            try:
                uss_b += p.memory_full_info().uss
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                return None
        return uss_b / _MIB


def probe(*, refresh_s: float = 1.0, proc_stat: Callable[[], ProcStatTimes] = ProcStatTimes
          ) -> ProcessSensor | Unavailable:
    """Open the process-tree sensor (psutil works wherever it imports); without the ``host`` domain
    where ``proc_stat()`` (``ProcStatTimes``, or a stand-in in tests) cannot open or read ``/proc/stat``."""
    reader, host_unavailable = None, None
    try:
        reader = proc_stat()
        busy_total(reader())
    except (OSError, ValueError) as err:
        if reader is not None:
            reader.close()
        reader, host_unavailable = None, f"cannot read /proc/stat: {err}"
    try:
        return ProcessSensor(refresh_s, reader, host_unavailable)
    except (psutil.Error, OSError) as err:
        if reader is not None:
            reader.close()
        return Unavailable(NAME, f"psutil cannot read this process: {err}")
