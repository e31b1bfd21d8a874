"""Progress that respects logs: every progress bar of the package comes from :func:`tqdm`.

On a terminal it is ``tqdm.auto.tqdm``.  When stderr is not a terminal (redirected to a
file, a pipe, a batch system's log) a bar would write hundreds of kilobytes of frames
joined by carriage returns; :class:`PlainProgress` prints one plain line now and then
instead (every :data:`EVERY_SECONDS`, and once at the end), with the same interface the
package uses (iteration, ``update``, ``set_postfix``, ``close``, ``write``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO

__all__ = ["tqdm", "PlainProgress", "EVERY_SECONDS", "interactive"]

#: Seconds between two plain progress lines (``ALARA_PROGRESS_EVERY`` overrides).
EVERY_SECONDS = 30.0


def interactive(stream: Optional[TextIO] = None) -> bool:
    """Whether ``stream`` (default stderr, where bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False


def _every() -> float:
    try:
        return max(0.0, float(os.environ.get("ALARA_PROGRESS_EVERY", EVERY_SECONDS)))
    except ValueError:
        return EVERY_SECONDS


class PlainProgress:
    """A progress "bar" for logs: ``desc: 40/200 step (20%), 12.3 s, loss=0.5`` lines."""

    def __init__(self, iterable: Optional[Iterable] = None, desc: Optional[str] = None,
                 total: Optional[float] = None, unit: str = "it", initial: float = 0,
                 disable: bool = False, file: Optional[TextIO] = None, **_: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.desc, self.total, self.unit = desc or "", total, unit
        self.n = initial
        self.disable = disable
        self.file = file
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._every = _every()
        self._printed_n: Optional[float] = None
        # A caller that sets a postfix after each update gets its line then, so the line
        # shows the postfix of the step it counts.
        self._postfix_follows = False
        self._due = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def update(self, n: float = 1) -> None:
        """Advance by ``n``; prints a line when :data:`EVERY_SECONDS` have passed."""
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self._last >= self._every:
            self._last = now
            if self._postfix_follows:
                self._due = True
            else:
                self._print()

    def set_postfix(self, ordered_dict: Optional[dict] = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())
        self._postfix_follows = True
        if self._due:
            self._print()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def reset(self, total: Optional[float] = None) -> None:
        self.n, self.total = 0, total
        self._start = self._last = time.monotonic()

    def _line(self) -> str:
        done = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "")
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {done} {self.unit}{pct}, {time.monotonic() - self._start:.1f} s{extra}"

    def _print(self) -> None:
        self._printed_n, self._due = self.n, False
        print(self._line(), file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        """One last line (unless nothing happened since the previous one)."""
        if not self.disable and self._printed_n != self.n and self.n:
            self._print()
        self.disable = True

    @staticmethod
    def write(s: str, file: Optional[TextIO] = None, end: str = "\n", nolock: bool = False) -> None:
        print(s, file=file or sys.stderr, end=end, flush=True)


def _tqdm(*args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(...)`` on a terminal, :class:`PlainProgress` otherwise."""
    if interactive(kwargs.get("file")):
        from tqdm.auto import tqdm as bar

        return bar(*args, **kwargs)
    return PlainProgress(*args, **kwargs)


def _write(s: str, file: Optional[TextIO] = None, end: str = "\n", nolock: bool = False) -> None:
    """``tqdm.write`` on a terminal (keeps open bars intact), a plain print otherwise."""
    if interactive(file):
        from tqdm.auto import tqdm as bar

        bar.write(s, file=file, end=end, nolock=nolock)
    else:
        PlainProgress.write(s, file=file, end=end)


#: Drop-in for ``tqdm.auto.tqdm`` (call it, or ``tqdm.write(msg)``).
tqdm = _tqdm
tqdm.write = _write  # type: ignore[attr-defined]
