"""The CLI's start-up phases run without the garbage collector's passes (cli._start_up)."""

import gc
import weakref

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
            # dropped cycles, many more than a young-generation pass waits for (700 allocations):
            # with the collector running they would be freed at once
            dropped = [weakref.ref(Node()) for _ in range(5000)]
            assert all(ref() is not None for ref in dropped)
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(built)  # out of later full passes
        with pytest.raises(RuntimeError):  # an error inside still turns the collector back on
            with _start_up():
                raise RuntimeError("loading failed")
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
