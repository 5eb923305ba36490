"""The collector pause around a classification batch nests, is shared between threads, and
leaves the collector as it found it."""

from __future__ import annotations

import gc
import threading

from behavior_rag.classify.gc_pause import paused_gc


def test_pauses_nest_and_restore_the_collector():
    assert gc.isenabled()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off():
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_last_thread_out_turns_the_collector_back_on():
    inside, release = threading.Event(), threading.Event()

    def hold():
        with paused_gc():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(5)
    with paused_gc():
        pass
    assert not gc.isenabled()  # the other thread's pause is still on
    release.set()
    t.join(5)
    assert gc.isenabled()


def test_an_error_inside_restores_the_collector():
    try:
        with paused_gc():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
