"""The collector around a boot: paused, frozen once running, unfrozen at the end.

These change process-wide state (the collector), so each test leaves it as it
found it, checked by the fixture.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from runtime.heap import BootHeap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    yield
    assert gc.isenabled(), "a test left the collector off"
    assert gc.get_freeze_count() == 0, "a test left objects frozen"


def test_a_boot_pauses_the_collector_and_freezes_what_it_built_once_running() -> None:
    heap = BootHeap()

    heap.pause()
    assert not gc.isenabled()
    built = _Cycle()
    heap.settle()

    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert not any(obj is built for obj in gc.get_objects()), "frozen: no collection visits it"
    heap.release()
    assert any(obj is built for obj in gc.get_objects())


def test_the_end_of_a_session_collects_what_its_boot_froze() -> None:
    heap = BootHeap()
    heap.pause()
    gone = _Cycle()
    watch = weakref.ref(gone)
    heap.settle()
    del gone
    gc.collect()
    assert watch() is not None, "frozen garbage is not collected while the session runs"

    heap.release()
    gc.collect()

    assert watch() is None


def test_a_failed_boot_resumes_the_collector_without_freezing() -> None:
    heap = BootHeap()
    heap.pause()

    heap.release()  # the boot raised: run()'s finally

    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    heap.release()  # and again: nothing happens


def test_a_collector_switched_off_before_the_boot_stays_off() -> None:
    gc.disable()
    try:
        heap = BootHeap()
        heap.pause()
        heap.settle()
        assert not gc.isenabled()
        heap.release()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_boots_resume_once_the_last_one_is_done() -> None:
    first, second = BootHeap(), BootHeap()
    first.pause()
    second.pause()

    first.settle()
    assert not gc.isenabled(), "the second boot still runs"
    second.settle()
    assert gc.isenabled()

    first.release()
    assert gc.get_freeze_count() > 0, "the second session still runs"
    second.release()
