"""The directory watch behind the agent's event-driven waits (SEMANTICS PF75), on a real filesystem."""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from storage.system.fswatch import DirWatch, EntryWatcher


def _later(action, delay: float = 0.2) -> threading.Timer:
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_pf75_nothing_changed_is_a_timeout(tmp_path: Path) -> None:
    with DirWatch() as watch:
        assert watch.add(tmp_path)
        assert watch.wait(0.05) is False


def test_pf75_a_file_renamed_in_wakes_the_wait_long_before_its_timeout(tmp_path: Path) -> None:
    """What the shim does with the exit file: written aside, then renamed into place."""
    (tmp_path / "exit.tmp").write_text("0\n")
    with DirWatch() as watch:
        assert watch.add(tmp_path)
        timer = _later(lambda: os.rename(tmp_path / "exit.tmp", tmp_path / "exit"))
        try:
            # The timeout is far longer than the test may take: only the rename can end this wait.
            assert watch.wait(300) is True
        finally:
            timer.cancel()
        assert (tmp_path / "exit").exists()


def test_pf75_a_file_removed_and_a_directory_made_wake_the_wait(tmp_path: Path) -> None:
    """What runc does: removes exec.fifo once the container started; makes its state directory."""
    (tmp_path / "exec.fifo").write_text("")
    with DirWatch() as watch:
        assert watch.add(tmp_path)
        timer = _later(lambda: (tmp_path / "exec.fifo").unlink())
        try:
            assert watch.wait(300) is True
        finally:
            timer.cancel()
        timer = _later(lambda: (tmp_path / "state").mkdir())
        try:
            assert watch.wait(300) is True
        finally:
            timer.cancel()
        # The events were drained: nothing is left to report.
        assert watch.wait(0.05) is False


def test_pf75_a_missing_directory_is_not_watched_and_can_be_added_once_it_exists(tmp_path: Path) -> None:
    later = tmp_path / "made-later"
    with DirWatch() as watch:
        assert watch.add(later) is False
        (tmp_path / "a-file").write_text("")
        assert watch.add(tmp_path / "a-file") is False
        later.mkdir()
        assert watch.add(later) is True
        assert watch.add(later) is True  # twice is once
        timer = _later(lambda: (later / "x").write_text("1"))
        try:
            assert watch.wait(300) is True
        finally:
            timer.cancel()


def test_pf75_the_watch_gives_its_descriptor_back(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with DirWatch() as watch:
            watch.add(tmp_path)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_pf77_the_entry_watcher_calls_back_for_its_entry_only_and_forgets_a_removed_directory(tmp_path: Path) -> None:
    watcher = EntryWatcher("test-exits")
    called = {"a": threading.Event(), "b": threading.Event()}
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    try:
        assert watcher._thread is None, "no thread before the first watch"
        assert watcher.watch(a, "exit", called["a"].set)
        assert watcher.watch(b, "exit", called["b"].set)
        assert watcher.watch(tmp_path / "missing", "exit", lambda: None) is False
        (a / "exit.tmp").write_text("0\n")  # another name: no call
        assert not called["a"].wait(0.2)
        os.rename(a / "exit.tmp", a / "exit")  # the shim's rename into place
        assert called["a"].wait(60), "the rename of the watched entry did not call back"
        assert not called["b"].is_set()
        (b / "exit").write_text("1\n")  # created in place counts too
        assert called["b"].wait(60)
        for path in (a / "exit", a):
            path.unlink() if path.is_file() else path.rmdir()
        # The removed directory's watch is dropped (IN_IGNORED), leaving only b's.
        deadline = threading.Event()
        for _ in range(600):
            with watcher._lock:
                if len(watcher._by_wd) == 1:
                    break
            deadline.wait(0.05)
        with watcher._lock:
            assert [entry for entry, _ in watcher._by_wd.values()] == [b"exit"]
    finally:
        watcher.close()
    assert watcher._thread is not None and not watcher._thread.is_alive()
    assert watcher.watch(b, "exit", lambda: None) is False, "a closed watcher takes no more watches"
    watcher.close()  # twice is once


@contextlib.contextmanager
def _descriptors(soft_limit: int, past: int | None = None) -> Iterator[None]:
    """With the soft limit on open files set to ``soft_limit``, descriptors opened until one is numbered
    past ``past`` (None: until the table is full, EMFILE); all closed and the limit restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))
    fillers: list[int] = []
    try:
        while past is None or not fillers or fillers[-1] <= past:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                assert past is None and exc.errno == errno.EMFILE, exc
                break
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_pf75_pf77_the_watches_work_with_descriptors_past_1023(tmp_path: Path) -> None:
    """A busy agent may hold more than 1,024 descriptors; select() refuses those past 1023, poll() does not.
    Both watches get an inotify descriptor above 1023 here and still wake on a rename."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"the hard limit on open files is {hard}: no descriptor past 1023 can be made")
    with _descriptors(max(soft, 1100), past=1030):
        with DirWatch() as watch:
            assert watch._fd > 1023
            assert watch.add(tmp_path)
            timer = _later(lambda: (tmp_path / "a").write_text("x"))
            try:
                assert watch.wait(300) is True
            finally:
                timer.cancel()
        woke = threading.Event()
        watcher = EntryWatcher("test-high-fd")
        try:
            assert watcher.watch(tmp_path, "exit", woke.set)
            assert watcher._fd > 1023
            (tmp_path / "exit.tmp").write_text("0\n")
            os.rename(tmp_path / "exit.tmp", tmp_path / "exit")
            assert woke.wait(300)
        finally:
            watcher.close()


def test_pf78_without_inotify_to_spare_the_watches_fall_back_to_their_looks(tmp_path: Path) -> None:
    """PF78: out of inotify (here: the descriptor table is full, the EMFILE a user's exhausted inotify
    instances give too), a DirWatch still waits its timeout and an EntryWatcher declines the watch: the
    caller's own looks carry on, nothing raises."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    with _descriptors(min(soft, highest + 64)):
        with DirWatch() as watch:
            assert watch.add(tmp_path) is False
            started = time.monotonic()
            assert watch.wait(0.2) is False
            assert time.monotonic() - started >= 0.19
        watcher = EntryWatcher("test-no-inotify")
        try:
            assert watcher.watch(tmp_path, "exit", lambda: None) is False
        finally:
            watcher.close()

