"""The package as installed has what users need, and none of the tests.

In the version matrix (noxfile.py) this runs against the installed wheel, so a template or
``py.typed`` missing from the wheel fails CI; editable installs would hide that.
"""

import re
from importlib import metadata
from pathlib import Path

from django.template.loader import get_template

import storage_guard

PACKAGE = Path(storage_guard.__file__).resolve().parent
DISTRIBUTION = "django-storage-guard"
# A template name as the code and the templates spell it.
TEMPLATE_NAME = re.compile(r"""["']((?:admin/)?storage_guard/[\w/.-]+\.html)["']""")


def templates_the_package_uses() -> set[str]:
    sources = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.html")]
    return {name for path in sources for name in TEMPLATE_NAME.findall(path.read_text())}


def test_every_template_the_code_names_is_installed_with_the_package():
    names = templates_the_package_uses()
    assert "admin/storage_guard/saveattempt/change_list.html" in names  # the scan works
    for name in sorted(names):
        origin = Path(get_template(name).origin.name).resolve()
        assert origin.is_relative_to(PACKAGE), f"{name} came from {origin}, not the package"


def test_the_package_is_marked_typed():
    assert (PACKAGE / "py.typed").is_file()


def installed_files() -> list[str]:
    """The wheel's RECORD; from a source checkout (an egg-info, no RECORD) the package on disk."""
    record = metadata.distribution(DISTRIBUTION).read_text("RECORD")
    if record is None:
        return [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*")]
    return [line.split(",")[0] for line in record.splitlines()]


def test_the_distribution_ships_no_test_code():
    files = installed_files()
    assert "storage_guard/__init__.py" in files
    shipped = [f for f in files if f.startswith("tests/") or "testbed" in f or "conftest" in f]
    assert shipped == []
    assert not (PACKAGE / "testing").exists()


def test_the_metadata_declares_the_license_and_the_tested_versions():
    meta = metadata.metadata(DISTRIBUTION)
    assert meta["License-Expression"] == "MIT"
    classifiers = set(meta.get_all("Classifier"))
    for python in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {python}" in classifiers
    for django in ("5.2", "6.0", "6.1"):
        assert f"Framework :: Django :: {django}" in classifiers
    assert "Typing :: Typed" in classifiers
