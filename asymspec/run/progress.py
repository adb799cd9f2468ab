"""Progress output: tqdm bars on a terminal, plain log lines otherwise, nothing with quiet."""

from __future__ import annotations

import sys
import time


class _NullBar:
    def update(self, n: int = 1, **info) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LogBar(_NullBar):
    def __init__(self, progress: Progress, total: int, desc: str, every: int) -> None:
        self.progress, self.total, self.desc, self.every, self.n = progress, total, desc, every, 0

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        if self.n % self.every == 0 or self.n == self.total:
            extra = " ".join(f"{k}={v}" for k, v in info.items())
            self.progress.log(f"{self.desc} {self.n}/{self.total} {extra}".rstrip())


class _TqdmBar(_NullBar):
    def __init__(self, total: int, desc: str, position: int, leave: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, position=position, leave=leave,
                        dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1, **info) -> None:
        if info:
            self.bar.set_postfix(info, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class Progress:
    """``mode`` is ``"tty"`` (tqdm), ``"log"`` (lines on stderr) or ``"quiet"``."""

    def __init__(self, mode: str | None = None, quiet: bool = False) -> None:
        if quiet:
            mode = "quiet"
        elif mode is None:
            mode = "tty" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.t0 = time.time()

    def log(self, message: str) -> None:
        if self.mode == "quiet":
            return
        line = f"[{time.time() - self.t0:7.1f}s] {message}"
        if self.mode == "tty":
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str, level: int = 0, every: int = 1):
        """A bar for ``total`` steps; ``level`` 0 for units, 1 for epochs inside a unit."""
        if self.mode == "quiet":
            return _NullBar()
        if self.mode == "tty":
            return _TqdmBar(total, desc, level, leave=level == 0)
        return _LogBar(self, total, desc, every)
