"""The CLI's start-up phases run without the garbage collector's passes (cli._start_up)."""

import gc

import pytest

from coars_fast.cli import _start_up


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector frees it


def test_start_up_pauses_the_collector_then_freezes_what_it_built():
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    try:
        with _start_up():
            assert not gc.isenabled()
            built = [Node() for _ in range(1000)]
            assert gc.collect(2) >= 0 and all(gc.is_tracked(n) for n in built)
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(built)  # out of later full passes
        with pytest.raises(RuntimeError):  # an error inside still turns the collector back on
            with _start_up():
                raise RuntimeError("loading failed")
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
