"""Old import paths of moved modules still work for a release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import sys
import warnings

import pytest

from storage_guard._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_gives_the_moved_module_and_warns(old):
    new = MOVED[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}") as caught:
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new  # the real module, not a copy under the old name
    assert caught[0].filename == __file__  # the warning points at the import, not importlib


def test_from_import_of_a_name_through_an_old_path():
    sys.modules.pop("storage_guard.replay", None)
    with pytest.warns(DeprecationWarning):
        from storage_guard.replay import replay_ids
    from storage_guard.operations.redelivery import replay_ids as moved
    assert replay_ids is moved


def test_new_paths_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for new in MOVED.values():
            importlib.import_module(new)


def test_every_moved_module_exists_at_its_new_place_and_not_at_its_old():
    import storage_guard

    root = storage_guard.__path__[0]
    for old, new in MOVED.items():
        assert importlib.util.find_spec(new) is not None, new
        leaf = old.rpartition(".")[2]
        assert not (importlib.resources.files("storage_guard") / f"{leaf}.py").is_file(), \
            f"{root}/{leaf}.py is back beside its new place {new}"


def test_a_name_moved_out_of_the_report_works_at_its_old_path_and_warns():
    from storage_guard.management import arguments
    from storage_guard.operations import report

    with pytest.warns(DeprecationWarning, match=r"report\.parse_since moved to "
                      r"storage_guard\.management\.arguments\.parse_since") as caught:
        from storage_guard.operations.report import parse_since
    assert parse_since is arguments.parse_since
    assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning):
        assert report.DEFAULT_SINCE == arguments.DEFAULT_SINCE == "24h"
    with pytest.raises(AttributeError):
        report.no_such_name  # noqa: B018
