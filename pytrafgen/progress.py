"""Progress that tells the truth on a terminal and in a log file.

On a terminal (stderr is a TTY): a rich bar with counts, elapsed time and ETA. Otherwise
(piped to a file, CI, ``nohup``): one plain line every ``interval_s`` seconds and one at the
end, so a log shows that work is moving and how far it got. Both go to stderr, so ``--json``
output on stdout stays clean.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO


class ProgressCallback(Protocol):
    """``update(done, total=None)``: how much of the work is finished; ``total`` may be None
    (unknown, or unchanged) or grow."""

    def __call__(self, done: int, total: int | None = None, /) -> None: ...


PLAIN_INTERVAL_S = 5.0


def _duration(seconds_f: float) -> str:
    seconds = max(0, round(seconds_f))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class PlainProgress:
    """Periodic plain lines: ``<what>: 40/156 flows (26 %), 12 s elapsed, about 35 s left``."""

    def __init__(self, description: str, unit: str, stream: TextIO, interval_s: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.description, self.unit, self.stream = description, unit, stream
        self.interval_s, self.clock = interval_s, clock
        self.started = clock()
        self.last_line = -float("inf")
        self.done: int = 0
        self.total: int | None = None

    def line(self) -> str:
        elapsed = self.clock() - self.started
        text = f"{self.description}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f} %)"
        else:
            text += f" {self.unit}"
        text += f", {_duration(elapsed)} elapsed"
        if self.total and 0 < self.done < self.total:
            text += f", about {_duration(elapsed * (self.total - self.done) / self.done)} left"
        return text

    def update(self, done: int, total: int | None = None) -> None:
        self.done, self.total = int(done), (int(total) if total is not None else self.total)
        self.tick()

    def tick(self) -> None:
        """Print the current line if ``interval_s`` has passed since the last one."""
        now = self.clock()
        if now - self.last_line >= self.interval_s:
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        print(self.line() + " — done", file=self.stream, flush=True)


@contextlib.contextmanager
def _ticking(plain: PlainProgress) -> Iterator[None]:
    """Call ``plain.tick()`` from a thread while the body runs: work that reports only per
    batch (or not at all for a while) still shows a line every interval with the time so far."""
    import threading

    stop = threading.Event()

    def run() -> None:
        while not stop.wait(plain.interval_s / 4):
            plain.tick()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "flows", enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float = PLAIN_INTERVAL_S) -> Iterator[ProgressCallback]:
    """Yield ``update(done, total=None)``; draws a bar with ETA on a terminal, else plain lines."""
    out = stream if stream is not None else sys.stderr
    if not enabled:

        def ignore(_done: int, _total: int | None = None) -> None:
            return None

        yield ignore
        return
    if not out.isatty():
        plain = PlainProgress(description, unit, out, interval_s)
        plain.update(0, total)
        with _ticking(plain):
            yield plain.update
        plain.finish()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=out), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            if new_total is None:
                bar.update(task, completed=done)
            else:
                bar.update(task, completed=done, total=new_total)

        yield update


@contextlib.contextmanager
def progress_steps(total: int, enabled: bool = True, description: str = "evaluating",
                   stream: TextIO | None = None) -> Iterator[Callable[[str], None]]:
    """Yield ``step(name)``, called as each of ``total`` named steps starts: a bar showing the
    running step on a terminal, else one line per step."""
    out = stream if stream is not None else sys.stderr
    if not enabled:
        yield lambda _name: None
        return
    if not out.isatty():
        started = time.monotonic()
        count = [0]

        def say(name: str) -> None:
            count[0] += 1
            print(f"{description} {count[0]}/{total}: {name} ({_duration(time.monotonic() - started)} elapsed)",
                  file=out, flush=True)

        yield say
        print(f"{description}: done in {_duration(time.monotonic() - started)}", file=out, flush=True)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=out), transient=True) as bar:
        task = bar.add_task(description, total=total)
        any_started = [False]

        def step(name: str) -> None:
            if any_started[0]:
                bar.advance(task)
            any_started[0] = True
            bar.update(task, description=f"{description}: {name}")

        yield step
        bar.update(task, completed=total)


@contextlib.contextmanager
def activity(description: str, enabled: bool = True, stream: TextIO | None = None,
             interval_s: float = PLAIN_INTERVAL_S) -> Iterator[None]:
    """Work whose progress is unknown (a generator's ``fit``): a spinner with the elapsed time
    on a terminal, else a line at the start, one every ``interval_s`` and one at the end."""
    import threading

    out = stream if stream is not None else sys.stderr
    if not enabled:
        yield
        return
    if out.isatty():
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=Console(file=out), transient=True) as bar:
            bar.add_task(description, total=None)
            yield
        return
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(interval_s):
            print(f"{description}: {_duration(time.monotonic() - started)} elapsed", file=out, flush=True)

    print(f"{description}…", file=out, flush=True)
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    print(f"{description}: done in {_duration(time.monotonic() - started)}", file=out, flush=True)


__all__ = ["PLAIN_INTERVAL_S", "PlainProgress", "ProgressCallback", "activity", "progress_bar", "progress_steps"]
