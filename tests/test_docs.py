"""The docs track the code: every error code, setting and command is documented."""

from pathlib import Path

import pytest

import storage_guard
from storage_guard.checks.codes import Codes
from storage_guard.conf import DEFAULTS
from storage_guard.saving.classification import _NETWORK_TABLE, S3_CODES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def read(name: str) -> str:
    return (DOCS / name).read_text()


@pytest.mark.parametrize("code", sorted(set(S3_CODES) | {row[1] for row in _NETWORK_TABLE}))
def test_every_error_code_is_in_the_error_table(code):
    assert f"`{code}`" in read("errors.md")


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_setting_is_documented(key):
    assert f"`{key}`" in read("configuration.md")


@pytest.mark.parametrize("check_id", sorted(
    value for name, value in vars(Codes).items() if not name.startswith("_")))
def test_every_system_check_is_documented(check_id):
    assert check_id.startswith("storage_guard.")
    assert check_id in read("checks.md")


def test_every_management_command_is_documented():
    commands = Path(storage_guard.__file__).parent / "management" / "commands"  # as installed
    names = [p.stem for p in commands.glob("*.py") if not p.stem.startswith("_")]
    text = "".join(p.read_text() for p in DOCS.glob("*.md"))
    assert names  # the glob found the commands
    missing = [name for name in names if name not in text]
    assert not missing, f"commands without docs: {missing}"


def _package_parts() -> list[str]:
    """The installed package's modules and packages, one level down (as ``name.py``/``name/``),
    and the modules of the role packages (``saving/payload.py``, ...)."""
    root = Path(storage_guard.__file__).parent
    skip = {"__init__.py", "migrations", "templates", "templatetags", "locale", "static",
            "__pycache__", "contrib"}
    parts = [f"{p.name}/" if p.is_dir() else p.name for p in root.iterdir()
             if p.name not in skip and (p.is_dir() or p.suffix == ".py")]
    for package in ("saving", "operations", "integrations", "contrib/generated", "admin",
                    "checks", "keys"):
        parts += [f"{package}/{p.name}" for p in (root / package).glob("*.py")
                  if p.name != "__init__.py"]
    return sorted(parts)


def test_architecture_names_every_module_of_the_layout():
    text = read("architecture.md")
    parts = _package_parts()
    assert "saving/payload.py" in parts and "storage.py" in parts  # the walk found the tree
    missing = [part for part in parts
               if f"`{part}`" not in text and f"  {part}" not in text
               and f"`{part.rpartition('/')[2]}`" not in text]
    assert not missing, f"docs/architecture.md does not name: {missing}"
