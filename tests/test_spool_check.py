"""storage_guard.W007: the last-resort spool directory must be usable."""

from __future__ import annotations

import os

from django.test import override_settings

from storage_guard import checks
from storage_guard.checks import Codes
from storage_guard.saving import spool


def spool_warnings(directory) -> list:
    with override_settings(STORAGE_GUARD={"LAST_RESORT_DIR": directory}):
        return [m for m in checks.check_deployment() if m.id == Codes.LAST_RESORT_DIR_UNUSABLE]


def test_a_writable_directory_passes_and_is_made_private(tmp_path):
    assert spool_warnings(str(tmp_path / "spool")) == []
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700


def test_the_default_directory_is_on_and_usable():
    with override_settings(STORAGE_GUARD={}):
        assert spool.directory() is not None
    assert spool_warnings(None) == []


def test_turned_off_on_purpose_is_not_warned_about():
    assert spool_warnings("") == []


def test_a_directory_that_cannot_be_created_is_warned_about(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    [warning] = spool_warnings(str(blocker / "spool"))
    assert warning.msg == (
        f"The last-resort spool cannot take entries: {blocker / 'spool'} cannot be created: "
        f"Not a directory. A failed save whose record cannot be written (database down) would "
        f"lose its bytes.")
    assert warning.hint == (
        "Set STORAGE_GUARD['LAST_RESORT_DIR'] to a directory this process owns and can write, "
        "on a volume that outlives the container (see docs/failure.md).")


def test_a_directory_another_user_owns_is_warned_about(tmp_path):
    if os.geteuid() == 0:  # root owns everything it makes: hand this one to nobody
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
    else:
        foreign = tmp_path.anchor and __import__("pathlib").Path("/")  # owned by root
    [warning] = spool_warnings(str(foreign))
    uid = foreign.stat().st_uid
    assert f"{foreign} belongs to another user (uid {uid})" in warning.msg
