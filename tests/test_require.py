"""The skip-or-fail helper of tests/conftest.py: a test that lacks a piece of its machine (../shared/data, the
browser) is skipped with the reason, or failed with the same reason where CI requires the piece
(``RLAE_SC_REQUIRE_DATA``, ``RLAE_SC_REQUIRE_BROWSER``, set by ``.ci/run``)."""

from __future__ import annotations

import pytest

import tests.conftest as conftest
from tests.conftest import REQUIRE_BROWSER, REQUIRE_DATA, shared_file, unavailable

REASON = "the widget is not installed"
SKIPPED, FAILED = pytest.skip.Exception, pytest.fail.Exception


def outcome(call, *args) -> SKIPPED | FAILED:
    """The skip or failure ``call(*args)`` ends in, caught here: a wrong skip must not skip this test itself."""
    try:
        call(*args)
    except (SKIPPED, FAILED) as exc:
        return exc
    raise AssertionError(f"{call.__name__}{args} neither skipped nor failed")


@pytest.mark.parametrize("switch", [REQUIRE_DATA, REQUIRE_BROWSER])
def test_unavailable_skips_unless_its_switch_is_set_then_fails_with_the_same_reason(monkeypatch, switch):
    other = REQUIRE_BROWSER if switch == REQUIRE_DATA else REQUIRE_DATA
    monkeypatch.delenv(switch, raising=False)
    monkeypatch.setenv(other, "1")  # the other switch does not require this piece
    for value in (None, "", "0"):
        if value is not None:
            monkeypatch.setenv(switch, value)
        end = outcome(unavailable, REASON, switch)
        assert type(end) is SKIPPED and str(end) == REASON, (value, end)
    for value in ("1", "yes"):
        monkeypatch.setenv(switch, value)
        end = outcome(unavailable, REASON, switch)
        assert type(end) is FAILED and str(end) == f"{REASON} ({switch} is set: this test may not be skipped)"
        assert not end.pytrace  # the reason alone, without a traceback into the helper


def test_shared_file_skips_or_fails_on_a_missing_file_and_returns_a_present_one(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path)
    monkeypatch.delenv(REQUIRE_DATA, raising=False)
    reason = f"{tmp_path / 'absent.h5ad'} not found: real-data tests need ../shared/data beside the checkout"
    end = outcome(shared_file, "absent.h5ad")
    assert type(end) is SKIPPED and str(end) == reason
    monkeypatch.setenv(REQUIRE_DATA, "1")
    end = outcome(shared_file, "absent.h5ad")
    assert type(end) is FAILED and str(end).startswith(reason)
    (tmp_path / "present.h5ad").write_bytes(b"")
    assert shared_file("present.h5ad") == tmp_path / "present.h5ad"
