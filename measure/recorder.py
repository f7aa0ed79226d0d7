"""Sampling of every open sensor into a JSON-lines file.

The measured window is delimited by two synchronous samples: ``start()`` takes
the ``start`` sample (t = 0) right before the first timed inference and
``stop()`` takes the ``end`` sample right after the last one, so the energy of
a counter over the window is exactly ``counter(end) - counter(start)``.
``split()`` takes a ``split`` sample the same way inside the window, at the
boundary between two phases of the work (a generation's prefill and decode),
so that each phase is delimited by synchronous samples too.
Between the two, a ``tick`` sample is taken every ``period_s`` on a fixed grid
(no drift; grid points missed by a late tick are skipped, not caught up).
A tick never runs inside another, nor inside an edge's or a split's capture: a
grid point that falls due while one is being taken is skipped, with every source.

Three tick sources:

- ``"thread"``: a daemon thread.  Right where the measured work leaves CPU
  cores free (a GPU model waiting on its kernels), it costs the work nothing
  but the moments it holds the GIL.
- ``"signal"``: an interval timer (``setitimer``, ``SIGALRM``) whose handler
  takes the tick in the thread that started the recorder, between two Python
  bytecodes: no thread to wake, no core taken from a CPU model that keeps
  every core busy, no GIL handed over.  The handler can fire again inside
  itself when a read takes longer than the period; it then returns at once.
  A tick that falls due during a long C call (one big operator, a CUDA
  synchronisation) is taken when the call returns, so this source suits work
  on the CPU.  The handler is installed
  with restartable system calls (``SA_RESTART``), so that blocking calls in C
  code are resumed rather than failed.  It needs the main thread, an unused
  ``SIGALRM`` and a period of at least ``MIN_SIGNAL_PERIOD_S`` (shorter ones
  would run handlers inside handlers without end); otherwise the thread is
  used, and ``Window.ticks`` says which source ran and why.
- ``"loop"``: the measured loop takes the ticks itself, calling ``poll()``
  between two units of its work (inferences, decoded tokens): a tick is taken
  there once its grid point has passed, so that nothing interrupts the model
  (at 0.01 s on two busy vCPUs the signal's delivery alone costs 0.3 %).  A
  tick is then late by up to one unit of work, and the grid points passed
  within it are skipped.  The signal's timer stays as a backstop: a grid point
  that no poll has taken one and a half periods after it falls due is taken
  by the timer, which then ticks every period (half a period after each grid
  point) until the next poll moves it back behind the polls.  So a unit of
  work shorter than one and a half periods is never interrupted, and longer
  ones, or a window whose code does not poll, get the signal's ticks.  It
  needs what the signal needs; where the signal is refused, the thread runs
  and ``poll()`` does nothing.

A tick does the least it can inside the window: it notes the clocks and takes
each sensor's raw reading (``capture_tick()`` or ``capture()``, see
``sensors.base``; the edges always use ``capture()``).  Decoding the readings
and writing the lines happens when ``stop()`` has taken the ``end`` sample,
outside the window, or in batches of ``flush_every`` ticks during a long
window, so that memory stays bounded (a crash loses at most the ticks of one
batch; the ``start`` line is written at once).  The thread writes a batch
outside its lock, and a signal tick due while a batch is written is only
captured, so the ``end`` sample never waits for a batch and lines stay in
capture order.  A sensor's slow housekeeping runs outside the lock: its
``before_window()`` right before the ``start`` sample and, with the thread,
its ``refresh()`` before each tick; with the signal there is none inside the
window (a process started during the window is counted from the next one).

A read that fails (``SensorError`` or ``OSError``) costs only what it lost:
the channels missing from the error's partial values are written null and
named in the line's ``gap`` field (a domain by its name when it lost every
channel, else each lost channel), the others are written as read.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from .sensors.base import Sensor, SensorError

TICK_SOURCES = ("thread", "signal", "loop")
BACKSTOP_PERIODS = 1.5  # loop ticks: a grid point no poll took this many periods after it is the timer's
MIN_SIGNAL_PERIOD_S = 0.001  # signal and loop ticks: shorter periods would nest handlers without end
FLUSH_EVERY = 1000  # ticks kept before a batch is written during the window


def utc_text(wall_s: float) -> str:
    """ISO 8601 UTC with a ``Z`` suffix, to the microsecond, of a ``time.time()`` value."""
    return datetime.fromtimestamp(wall_s, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def json_value(value: object) -> str:
    """``json.dumps(value)``, with a shortcut for the common cases (``None``, a finite float)."""
    if value is None:
        return "null"
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return json.dumps(value)


def signal_ticks_refusal() -> str | None:
    """Why signal ticks cannot run in the calling thread now, or ``None`` when they can."""
    if not hasattr(signal, "setitimer"):
        return "no setitimer on this platform"
    if threading.current_thread() is not threading.main_thread():
        return "not in the main thread"
    if signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL:  # None: a handler installed outside Python
        return "SIGALRM already has a handler"
    if signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
        return "the real-time interval timer is already armed"
    return None


@dataclass(frozen=True)
class Window:
    start_utc: str
    end_utc: str
    duration_s: float
    samples: int
    gap_samples: int
    first_error: str | None
    ticks: str  # the tick source that ran, with the reason where it is not the one asked for
    tick_cpu_s: float  # CPU seconds the ticks took inside the window (capture, and any batch written)

    def describe(self) -> dict:
        return dict(vars(self))


class Recorder:
    """Samples ``sensors`` into ``path`` between ``start()`` and ``stop()``."""

    def __init__(
        self,
        sensors: Sequence[Sensor],
        path: str | Path,
        period_s: float = 0.1,
        *,
        ticks: str = "thread",
        flush_every: int = FLUSH_EVERY,
    ):
        if period_s <= 0:
            raise ValueError(f"the sampling period must be positive, got {period_s}")
        if ticks not in TICK_SOURCES:
            raise ValueError(f"ticks must be one of {TICK_SOURCES}, got {ticks!r}")
        self.sensors = list(sensors)
        self._captures = [sensor.capture for sensor in self.sensors]
        self._tick_captures = [sensor.capture_tick for sensor in self.sensors]
        # per sensor: (channel, its pre-serialised ', "<channel>": '), and (domain, its channels)
        self._keys = [[(channel, f", {json.dumps(channel)}: ") for channel in sensor.channels]
                      for sensor in self.sensors]
        self._domains = [[(domain.name, domain.channels) for domain in sensor.domains] for sensor in self.sensors]
        self.path = Path(path)
        self.period_s = period_s
        self.ticks = ticks
        self.flush_every = max(1, flush_every)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_handler = None
        self._armed: str | None = None  # the tick source running: "thread", "signal" or None
        self._file = None
        self._pending: list[tuple] = []  # captured ticks not yet written: (mark, t, wall, readings)
        self._t0 = 0.0
        self._start_utc = ""
        self._ticks_used = ticks
        self._tick_cpu_s = 0.0
        self._signal_state: list = [False, 0.0, 0.0, False]  # the signal ticks': whether they run, their CPU
        # seconds, the instant (perf_counter) of the next grid point, whether the timer took the last tick
        self._poll: Callable[[], None] = _nothing  # what poll() does: a loop tick when one is due, else nothing
        self._samples = 0
        self._gaps = 0
        self.first_error: str | None = None  # the first failed read, for the run's metadata
        self._tick_error: Exception | None = None  # what stopped the ticks (a full disk, say); raised by stop()

    def start(self) -> None:
        if self._armed is not None:
            raise RuntimeError("the recorder is already running")
        self._file = open(self.path, "wb")
        try:
            self._start()
        except BaseException:
            self._disarm()
            self._file.close()
            raise

    def _start(self) -> None:
        self._stop.clear()
        self._pending = []
        self._samples = self._gaps = 0
        self._tick_cpu_s = 0.0
        self._signal_state = [False, 0.0, 0.0, False]
        self.first_error = None
        self._tick_error = None
        self._ticks_used = self.ticks
        refusal = signal_ticks_refusal() if self.ticks != "thread" else None
        if self.ticks != "thread" and self.period_s < MIN_SIGNAL_PERIOD_S:
            refusal = f"a period below {MIN_SIGNAL_PERIOD_S} s"
        if refusal:
            self._ticks_used = f"thread ({self.ticks} refused: {refusal})"
        self._prepare(window_start=True)
        with self._lock:
            self._t0 = time.perf_counter()
            start = self._capture("start", self._t0, self._captures)
        self._write([start])
        self._start_utc = utc_text(start[2])
        if self._ticks_used in ("signal", "loop"):
            handler, poll = self._signal_ticks()
            self._previous_handler = signal.getsignal(signal.SIGALRM)
            self._armed = "signal"  # first: a Ctrl-C from here on still finds the handler to restore
            signal.signal(signal.SIGALRM, handler)
            signal.siginterrupt(signal.SIGALRM, False)  # restart interrupted system calls rather than fail them
            if self._ticks_used == "loop":
                self._poll = poll
                signal.setitimer(signal.ITIMER_REAL, (1 + BACKSTOP_PERIODS) * self.period_s, self.period_s)
            else:
                signal.setitimer(signal.ITIMER_REAL, self.period_s, self.period_s)
        else:
            self._thread = threading.Thread(target=self._run, name="power-recorder", daemon=True)
            self._armed = "thread"
            self._thread.start()

    def stop(self) -> Window:
        """Take the ``end`` sample now, then stop the ticks, write what they captured and close the file.

        Called from the thread that called ``start``.  Raises what stopped the ticks, if anything did,
        after writing the ``end`` line.
        """
        if self._armed is None:
            raise RuntimeError("the recorder is not running")
        try:
            try:
                with self._lock:
                    self._stop.set()  # under the lock: no tick is captured after ``end``
                    self._signal_state[0] = False
                    t_end = time.perf_counter()
                    end = self._capture("end", t_end, self._captures)
            finally:
                self._disarm()
            # after a failed tick (a batch that could not be written, say) still try the end line
            self._write([end] if self._tick_error else [*self._pending, end])
        finally:
            self._pending = []
            self._file.close()
        if self._tick_error is not None:
            raise self._tick_error
        return Window(self._start_utc, utc_text(end[2]), t_end - self._t0, self._samples, self._gaps,
                      self.first_error, self._ticks_used, self._tick_cpu_s + self._signal_state[1])

    def split(self) -> float:
        """Take a ``split`` sample now, inside the window: the synchronous boundary between two phases of the
        measured work (a generation's prefill and decode). Like an edge, it reads every sensor fully
        (``capture()``) under the lock, so that no tick is captured during it; it is decoded and written with
        the ticks, after it in the file, so nothing is written at the boundary. Called from the thread that
        called ``start``, right after the phase's work and its synchronisation; returns its ``t_s`` (s since
        the ``start`` sample). ``RuntimeError`` when the recorder is not running."""
        if self._armed is None:
            raise RuntimeError("the recorder is not running")
        with self._lock:
            t = time.perf_counter()
            self._pending.append(self._capture("split", t, self._captures))
        return t - self._t0

    def poll(self) -> None:
        """Between two units of the measured work (two inferences, two decoded tokens), in the thread that
        called ``start``: with ``ticks="loop"``, take a tick now if a grid point has passed since the last one
        (a clock read and a comparison when none has); with any other source, or once stopped, nothing."""
        self._poll()

    def __enter__(self) -> "Recorder":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._armed is not None:
            self.stop()

    def _disarm(self) -> None:
        """Stop whichever tick source runs: join the thread, or disarm the timer and restore the handler."""
        self._stop.set()
        self._poll = _nothing
        if self._armed == "thread":
            self._thread.join()
            self._thread = None
        elif self._armed == "signal":
            try:
                signal.setitimer(signal.ITIMER_REAL, 0, 0)
            finally:
                signal.signal(signal.SIGALRM, self._previous_handler)
        self._armed = None

    def _run(self) -> None:
        tick = 1
        while not self._stop.wait(max(0.0, self._t0 + tick * self.period_s - time.perf_counter())):
            self._prepare(window_start=False)
            cpu = time.thread_time()
            with self._lock:
                if self._stop.is_set():
                    return
                batch = self._tick()
            if batch:  # outside the lock: the end sample never waits for a batch to be written
                self._write_batch(batch)
            self._tick_cpu_s += time.thread_time() - cpu
            if self._tick_error is not None:
                return
            # skip grid points already missed (a slow read) instead of bursting to catch up
            tick = max(tick + 1, int((time.perf_counter() - self._t0) / self.period_s) + 1)

    def _signal_ticks(self) -> tuple[Callable[[int, object], None], Callable[[], None]]:
        """The signal's handler, and the loop's tick (what ``poll()`` runs with ``ticks="loop"``).

        The handler runs between two bytecodes of the measured work, with the caches that work left cold, so
        every attribute it looks up and every call it makes costs the work (at 0.01 s on two busy vCPUs: an
        empty handler 0.3 %, a tick through the recorder's methods 0.8 % without a sensor;
        benchmarks/README.md).  What a tick needs is bound here, and a tick is the clocks, each sensor's
        ``capture_tick()`` and an append.  Python can run the handler again inside itself (a read slower
        than the period): the lock keeps a capture from nesting in another, or in an edge's.  A tick due
        while the handler writes a batch is only captured, and written with the next batch.

        The loop's tick compares the clock with the next grid point, takes the tick through the handler
        when it has passed, then moves the timer's next tick (the backstop) to ``BACKSTOP_PERIODS`` periods
        after the grid point that follows; the first poll after a tick of the timer's moves it there too.
        With loop ticks the handler takes no tick before the next grid point (a timer that fired while a
        poll took the tick)."""
        pending, captures, flush_every = self._pending, self._tick_captures, self.flush_every
        acquire, release = self._lock.acquire, self._lock.release
        perf_counter, wall, thread_time = time.perf_counter, time.time, time.thread_time
        setitimer, real_timer = signal.setitimer, signal.ITIMER_REAL
        t0, period_s, backstop_s = self._t0, self.period_s, BACKSTOP_PERIODS * self.period_s
        loop = self._ticks_used == "loop"
        # [whether ticks run, CPU seconds of the ticks, the next grid point, whether the timer took the last tick]
        state = self._signal_state
        state[0], state[2], state[3] = True, t0 + period_s, False
        writing = False

        def on_signal(signum, frame) -> None:
            nonlocal writing
            if not state[0]:  # stopped
                return
            cpu = thread_time()  # before the lock: nothing between taking it and the try (a Ctrl-C)
            if not acquire(False):  # a capture is running in this thread
                return
            try:
                t = perf_counter()
                if loop and t < state[2]:  # a poll took this grid point's tick a moment ago
                    return
                pending.append(("tick", t, wall(), read_all(captures)))
                state[2], state[3] = t0 + ((t - t0) // period_s + 1) * period_s, signum is not None
            except Exception as error:  # noqa: BLE001 - a sensor's bug: stop() raises it, not the measured work
                self._tick_error, state[0] = error, False
            finally:
                release()
            if writing:  # the handler writing the batch counts this tick's CPU time
                return
            if len(pending) >= flush_every:
                writing = True  # first: a tick nested from here on is only captured, and lines stay in order
                batch = pending[:]
                pending.clear()
                try:
                    self._write_batch(batch)
                finally:
                    writing = False
                state[0] = state[0] and self._tick_error is None
            state[1] += thread_time() - cpu

        def backstop() -> None:  # the timer's next tick: BACKSTOP_PERIODS after the next grid point
            setitimer(real_timer, max(state[2] + backstop_s - perf_counter(), 1e-6), period_s)

        def on_poll() -> None:
            if not state[0]:
                return
            if perf_counter() < state[2]:
                if state[3]:  # the timer took the last tick: its next one goes back behind the polls
                    state[3] = False
                    backstop()
                return
            on_signal(None, None)
            if state[0]:
                backstop()

        return on_signal, on_poll

    def _tick(self) -> list[tuple]:
        """Capture a thread tick; the batch of captured ticks to write when one is due.

        An error stops the ticks and is raised by stop(), in the measuring thread, rather than here,
        inside the measured work or in a thread nobody watches.
        """
        try:
            self._pending.append(self._capture("tick", time.perf_counter(), self._tick_captures))
        except Exception as error:  # noqa: BLE001 - any failure is stop()'s to raise
            self._tick_error = error
            return []
        if len(self._pending) < self.flush_every:
            return []
        batch = self._pending[:]
        self._pending.clear()
        return batch

    def _write_batch(self, batch: list[tuple]) -> None:
        try:
            self._write(batch)
        except Exception as error:  # noqa: BLE001 - raised by stop()
            self._tick_error = error

    def _prepare(self, window_start: bool) -> None:
        """Let every sensor do its slow housekeeping now, outside the lock, rather than inside a read:
        ``before_window()`` right before the window, else ``refresh()``."""
        for sensor in self.sensors:
            try:
                if window_start:
                    sensor.before_window()
                else:
                    sensor.refresh()
            except (SensorError, OSError):
                pass  # the next read retries it and records the failure as a gap

    def _capture(self, mark: str, t: float, captures: list) -> tuple:
        """Every sensor's raw reading now, or the error that prevented it."""
        return mark, t, time.time(), read_all(captures)

    def _write(self, samples: list[tuple]) -> None:
        """Decode captured samples, in capture order, into lines; write and flush them."""
        self._file.write("".join([self._line(*sample) for sample in samples]).encode())
        self._file.flush()

    def _line(self, mark: str, t: float, wall: float, readings: list) -> str:
        t_s = round(t - self._t0, 6)
        parts = ['{"t_s": ', json_value(t_s), ', "utc": "', utc_text(wall), '", "mark": "', mark, '", "gap": ', '""']
        failed = []
        for sensor, reading, keys, domains in zip(self.sensors, readings, self._keys, self._domains):
            values = reading
            if not isinstance(reading, Exception):
                try:
                    values = sensor.decode(reading)
                except (SensorError, OSError, ValueError) as error:
                    values = error
            if isinstance(values, Exception):
                self.first_error = self.first_error or f"{sensor.name} at t={t_s} s: {values}"
                values = values.values if isinstance(values, SensorError) else {}
                failed += _failed(values, domains)
            for channel, key in keys:
                parts.append(key)
                parts.append(json_value(values.get(channel)))
        if failed:
            parts[7] = json.dumps(";".join(failed))
            self._gaps += 1
        parts.append("}\n")
        self._samples += 1
        return "".join(parts)


def _nothing() -> None:
    """``poll()`` where no loop tick is to be taken."""


def read_all(captures: list[Callable[[], object]]) -> list:
    """Each capture's raw reading, or the ``SensorError`` or ``OSError`` that prevented it."""
    readings = []
    for capture in captures:
        try:
            readings.append(capture())
        except (SensorError, OSError) as error:
            readings.append(error)
    return readings


def _failed(values: dict, domains: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """What a failed read lost, for the ``gap`` field: each domain none of whose channels is in ``values``,
    else each of its channels missing from them."""
    failed = []
    for domain, channels in domains:
        missing = [channel for channel in channels if channel not in values]
        failed += [domain] if missing and len(missing) == len(channels) else missing
    return failed
