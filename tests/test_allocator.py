"""mindlens.allocator: freed memory kept for reuse while explaining, and given back to
glibc's own limits afterwards; the explanations are the same to the bit."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

from mindlens import allocator, explain
from mindlens.allocator import reusing_memory


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, param: int, value: int) -> int:
        with self.lock:
            self.calls.append((param, value))
        return 1


@pytest.fixture
def recorded(monkeypatch):
    """mallopt and malloc_trim recorded; the memory given back as soon as the last
    explanation ends (no grace period)."""
    rec = Recorder()
    monkeypatch.setattr(allocator, "_MALLOPT", rec)
    monkeypatch.setattr(allocator, "_TRIM", lambda pad: rec(0, pad))
    monkeypatch.setattr(allocator, "GRACE_S", 0.0)
    monkeypatch.setattr(allocator, "_held", False)
    monkeypatch.setattr(allocator, "_timer", None)
    return rec


HELD = [(-3, 2**31 - 1), (-1, 2**31 - 1)]
AFTER = [(-3, 32 << 20), (-1, 64 << 20), (0, 0)]  # thresholds, then malloc_trim(0)


def test_thresholds_are_raised_once_and_set_to_glibcs_dynamic_maxima_after(recorded):
    with reusing_memory():
        assert allocator.active()
        with reusing_memory():  # nested: nothing more is set
            pass
        assert allocator.active()
        assert recorded.calls == HELD
    assert not allocator.active() and not allocator.held()
    assert recorded.calls[2:] == AFTER


def test_an_error_inside_still_restores(recorded):
    with pytest.raises(RuntimeError), reusing_memory():
        raise RuntimeError("boom")
    assert not allocator.active()
    assert recorded.calls[-3:] == AFTER


def test_held_until_the_last_of_several_threads_leaves(recorded):
    inside = threading.Barrier(4)
    leave = threading.Event()

    def work() -> None:
        with reusing_memory():
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    inside.wait()
    assert allocator.active() and len(recorded.calls) == 2  # raised once for all three
    leave.set()
    for t in threads:
        t.join()
    assert not allocator.active() and recorded.calls == HELD + AFTER


def test_kept_for_the_grace_period_then_given_back(recorded, monkeypatch):
    monkeypatch.setattr(allocator, "GRACE_S", 0.3)
    with reusing_memory():
        pass
    assert allocator.held() and recorded.calls == HELD  # kept for the next call
    with reusing_memory():  # within the grace period: nothing to set again
        pass
    assert recorded.calls == HELD
    deadline = time.monotonic() + 10
    while allocator.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not allocator.held() and recorded.calls == HELD + AFTER


def test_give_back_ends_the_grace_period_at_once(recorded, monkeypatch):
    monkeypatch.setattr(allocator, "GRACE_S", 60.0)
    with reusing_memory():
        allocator.give_back()  # an explanation runs: nothing is given back
        assert recorded.calls == HELD
    assert allocator.held()
    allocator.give_back()
    assert not allocator.held() and recorded.calls == HELD + AFTER
    allocator.give_back()  # nothing kept: nothing more to do
    assert recorded.calls == HELD + AFTER


def test_explain_runs_inside_and_leaves(recorded, lenet):
    seen = []
    x = torch.rand(1, lenet.channels, *lenet.input_size)
    handle = lenet.module.register_forward_pre_hook(lambda m, i: seen.append(
        allocator.active()))
    try:
        explain(lenet, x, "saliency")
    finally:
        handle.remove()
    assert seen and all(seen)
    assert not allocator.active()


def test_the_explanation_is_the_same_to_the_bit_without_it(monkeypatch, mobilenet_v2):
    monkeypatch.setattr(allocator, "GRACE_S", 0.0)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with_reuse = explain(mobilenet_v2, x, "scorecam", batch_size=16).maps
    monkeypatch.setattr(allocator, "_MALLOPT", None)
    assert not allocator.available()
    assert torch.equal(explain(mobilenet_v2, x, "scorecam", batch_size=16).maps, with_reuse)


def test_the_user_decides(monkeypatch):
    monkeypatch.setenv("MINDLENS_REUSE_MEMORY", "0")
    assert allocator._libc() is None
    monkeypatch.delenv("MINDLENS_REUSE_MEMORY")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user tuned glibc
    assert allocator._libc() is None
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")
    assert allocator._libc() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_on_this_linux_it_is_glibcs_mallopt():
    assert allocator.available()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork")
def test_a_forked_child_starts_with_a_fresh_lock():
    import os

    with reusing_memory():
        pid = os.fork()
        if pid == 0:  # the child: the parent's block is not the child's
            ok = allocator._depth == 0 and not allocator._lock.locked()
            with reusing_memory():
                ok = ok and allocator.active()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
