"""A small suite whose tests really crash the pytest process, between
tests that pass: what pytest-abort-wrap is for."""

import ctypes
import os

import pytest


def test_passes_before():
    assert 1 + 1 == 2


def test_segfault():
    # Reading address 0 through ctypes: SIGSEGV inside the interpreter.
    ctypes.string_at(0)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_passes_param(n):
    assert n > 0


def test_abort():
    os.abort()


class TestGroup:
    def test_method_passes(self):
        assert "crash" in "pytest-abort crash"

    def test_exits_mid_test(self):
        os._exit(3)


def test_fails_normally():
    assert 2 + 2 == 5, "an ordinary failure, reported as usual"


def test_passes_after():
    assert True
