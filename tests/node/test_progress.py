"""The CLI progress bar: drawn on a terminal only, plain under NO_COLOR, throttled, never raising."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from node.cli._progress import Progress, progress, wants_colour

TTY_ENV = {"TERM": "xterm"}


class FakeTTY(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _bar(stream: io.StringIO, total: int | None = 10, env: dict[str, str] | None = None,
         clock: Clock | None = None) -> Progress:
    return Progress(total, "auditing", stream=stream, environ=TTY_ENV if env is None else env,
                    clock=clock or Clock(), width=60)


def test_silent_when_the_stream_is_not_a_terminal() -> None:
    out = io.StringIO()
    with progress(100, "auditing", stream=out, environ=TTY_ENV) as bar:
        for i in range(1, 101):
            bar(i)
    assert out.getvalue() == ""
    assert not bar.enabled


def test_silent_on_a_dumb_terminal() -> None:
    out = FakeTTY()
    with _bar(out, env={"TERM": "dumb"}) as bar:
        bar(5)
    assert out.getvalue() == ""


def test_draws_counts_and_ends_the_line_on_a_terminal() -> None:
    out = FakeTTY()
    with _bar(out) as bar:
        bar(3)
    text = out.getvalue()
    assert text.startswith("\rauditing [")
    assert "3/10  30%" in text
    assert text.endswith("\n")
    assert "\x1b[32m" in text  # colour on a terminal without NO_COLOR


def test_no_color_draws_the_same_bar_without_colour() -> None:
    out = FakeTTY()
    with _bar(out, env={**TTY_ENV, "NO_COLOR": "1"}) as bar:
        bar(10)
    text = out.getvalue()
    assert "10/10 100%" in text
    assert "\x1b[32m" not in text and "\x1b[0m" not in text
    assert not wants_colour(out, {**TTY_ENV, "NO_COLOR": "1"})
    assert wants_colour(out, {**TTY_ENV, "NO_COLOR": ""})  # empty NO_COLOR does not count


def test_redraws_are_throttled_but_the_final_state_is_drawn() -> None:
    out, clock = FakeTTY(), Clock()
    bar = _bar(out, total=1000, clock=clock)
    for i in range(1, 1000):
        bar(i)  # the clock stands still: only the first call draws
    assert out.getvalue().count("\r") == 1
    clock.now = 1.0
    bar(500)
    assert out.getvalue().count("\r") == 2
    bar(1000)  # the final state always draws, whatever the clock
    assert out.getvalue().count("\r") == 3
    assert "1000/1000 100%" in out.getvalue()


def test_the_audit_callback_shape_done_and_total_works() -> None:
    out = FakeTTY()
    bar = _bar(out, total=None)
    bar(1000, 4000)
    assert bar.total == 4000
    assert "1000/4000  25%" in out.getvalue()


def test_unknown_total_shows_a_counter() -> None:
    out = FakeTTY()
    with _bar(out, total=None) as bar:
        bar.advance(7)
        bar.advance()
    assert "auditing 8" in out.getvalue()
    assert "auditing [" not in out.getvalue()


def test_the_line_fits_the_terminal_width() -> None:
    bar = Progress(100, "importing records", stream=FakeTTY(), environ=TTY_ENV)
    bar(50)
    for width in (20, 40, 80, 200):
        assert len(bar.line(width)) <= width - 1
    assert bar.line(200).count("#") == 20  # the bar is at most 40 wide, half done


def test_close_without_drawing_writes_nothing_and_close_is_idempotent() -> None:
    out = FakeTTY()
    bar = _bar(out)
    bar.close()
    bar.close()
    assert out.getvalue() == ""
    bar(5)  # after close nothing more is drawn
    assert out.getvalue() == ""


def test_a_broken_terminal_never_raises() -> None:
    class Broken(FakeTTY):
        def write(self, s: str) -> int:
            raise OSError("EIO")

    bar = _bar(Broken())
    bar(1)
    bar(10)
    bar.close()
    assert not bar.enabled


def test_draws_on_a_real_pseudo_terminal(tmp_path: Path) -> None:
    """A child whose stderr is a pty draws; the same child with stderr piped writes nothing."""
    script = tmp_path / "child.py"
    script.write_text(
        "from node.cli._progress import progress\n"
        "with progress(4, 'catching up') as bar:\n"
        "    for i in range(1, 5):\n"
        "        bar(i)\n"
    )
    env = {**os.environ, "TERM": "xterm", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("NO_COLOR", None)
    master, slave = os.openpty()
    try:
        done = subprocess.run([sys.executable, str(script)], stderr=slave, env=env, timeout=60, check=True)
        assert done.returncode == 0
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the child's side is closed
                break
            if not data:
                break
            chunks.append(data)
        drawn = b"".join(chunks).decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert "catching up [" in drawn and "4/4 100%" in drawn
    piped = subprocess.run([sys.executable, str(script)], capture_output=True, env=env, timeout=60, check=True)
    assert piped.stderr == b""
