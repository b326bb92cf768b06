"""The version matrix: every tested Python x Django pair, run against the installed wheel.

    nox -l                                   # the cells
    nox -s "tests-3.13(django='6.1')"        # one cell (builds the wheel if dist/ has none)
    nox -s "tests-3.12(django='6.0')" -- tests/test_keys.py    # one cell, some tests

``scripts/test`` builds the sdist and the wheel, then runs every cell and prints a table.

Each cell installs ``dist/*.whl`` (never the source tree, never editable) into its own virtualenv
under ``.nox/``, copies ``tests/``, ``example_project/``, ``manage.py``, ``docs/`` and the
pytest configuration into a scratch directory and runs pytest there with
``STORAGE_GUARD_TEST_INSTALLED=1``, so ``import storage_guard`` can only find the installed
package (tests/conftest.py checks it).

The full cells (oldest and newest pair) run everything: SQLite with the browser tests, then
PostgreSQL. The others run the SQLite pass without the ``slow`` and ``browser`` tests.

A full cell's two passes can also run apart, side by side (``scripts/test`` does, so its lanes
balance): ``STORAGE_GUARD_TEST_PASS=sqlite nox -s "tests(3.11-django5.2)"`` runs the SQLite pass
only, and ``nox -s "postgres(3.11-django5.2)"`` the PostgreSQL pass only, in its own virtualenv
(so the two never install into the same one at once).

Interpreters: ``pythonX.Y`` on PATH, else pyenv's newest ``X.Y.*``. A missing one fails its cell
with a message that says so (and how to install it).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import nox
import nox.command

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "dist"
PYTHONS = ["3.11", "3.12", "3.13"]
DJANGOS = {"5.2": "3.11", "6.0": "3.12", "6.1": "3.12"}  # Django -> the oldest Python it supports
FULL = {("3.11", "5.2"), ("3.13", "6.1")}  # SQLite + browser, then PostgreSQL
COPIED = ["tests", "example_project", "docs", "manage.py", "pyproject.toml"]

# uv makes a cell's virtualenv and installs its dependencies in seconds (pip takes minutes on
# these machines); plain venv + pip when uv is not installed.
nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests"]


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


CELLS = [(py, dj) for py in PYTHONS for dj in DJANGOS if _ver(py) >= _ver(DJANGOS[dj])]


def find_interpreter(version: str) -> str | None:
    """``pythonX.Y`` on PATH, else the newest pyenv ``X.Y.*`` build; None when neither exists."""
    on_path = shutil.which(f"python{version}")
    if on_path and _reports(on_path, version):
        return on_path
    root = os.environ.get("PYENV_ROOT") or _pyenv_root()
    candidates = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python")),
                        key=lambda p: _ver(re.search(r"versions/([\d.]+)/", p).group(1)))
    found = [path for path in candidates if _reports(path, version)]
    return found[-1] if found else None


def _pyenv_root() -> str:
    try:
        return subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.expanduser("~/.pyenv")


def _reports(python: str, version: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def _put_interpreters_on_path() -> None:
    """Let nox find ``python3.12`` etc. by name: links to the interpreters ``find_interpreter``
    chose, first on PATH (a pyenv shim for a version pyenv has not selected would fail)."""
    link_dir = ROOT / ".nox" / "pythons"
    for version in PYTHONS:
        python = find_interpreter(version)
        link = link_dir / f"python{version}"
        if python is None or (link.is_symlink() and os.readlink(link) == python):
            continue
        link_dir.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(python)
    os.environ["PATH"] = f"{link_dir}{os.pathsep}{os.environ['PATH']}"


_put_interpreters_on_path()


@nox.session
def build(session: nox.Session) -> None:
    """The sdist and the wheel in dist/, checked with ``twine check --strict``."""
    # The build backend in this (reused) virtualenv, not a fresh isolated one per build.
    session.install("build>=1.2", "twine>=6.1", "setuptools>=77")
    shutil.rmtree(DIST, ignore_errors=True)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    session.run("python", "-m", "build", "--no-isolation", "--outdir", str(DIST), str(ROOT))
    session.run("twine", "check", "--strict", *glob.glob(str(DIST / "*")))


FULL_CELLS = [cell for cell in CELLS if cell in FULL]
PASSES = ("sqlite", "postgres")


@nox.session
@nox.parametrize(("python", "django"), CELLS, ids=[f"{py}-django{dj}" for py, dj in CELLS])
def tests(session: nox.Session, django: str) -> None:
    """One cell of the matrix, against the installed wheel.

    Its SQLite pass and, in a full cell, its PostgreSQL pass; ``STORAGE_GUARD_TEST_PASS=sqlite``
    (or ``postgres``) runs one of them."""
    full = (session.python, django) in FULL
    wanted = os.environ.get("STORAGE_GUARD_TEST_PASS", "")
    if wanted and wanted not in PASSES:
        session.error(f"STORAGE_GUARD_TEST_PASS={wanted!r}: one of {', '.join(PASSES)}, or unset")
    passes = [name for name in PASSES if name == "sqlite" or full]
    _run_cell(session, django, [name for name in passes if wanted in ("", name)])


@nox.session
@nox.parametrize(("python", "django"), FULL_CELLS,
                 ids=[f"{py}-django{dj}" for py, dj in FULL_CELLS])
def postgres(session: nox.Session, django: str) -> None:
    """A full cell's PostgreSQL pass alone, in its own virtualenv.

    ``scripts/test`` runs it beside the cell's SQLite pass (``tests`` with
    ``STORAGE_GUARD_TEST_PASS=sqlite``), each in a lane of its own."""
    _run_cell(session, django, ["postgres"])


def _run_cell(session: nox.Session, django: str, pass_names: list[str]) -> None:
    if not pass_names:
        session.error("no pass selected: a light cell has only the SQLite pass")
    wheel = _the_wheel(session)
    _install(session, wheel, django)
    workdir = _scratch_copy(session)
    session.env.update({"STORAGE_GUARD_TEST_INSTALLED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    session.chdir(workdir)
    session.run("python", "-c", "import django, storage_guard; print('Django', "
                "django.get_version(), '- storage_guard from', storage_guard.__file__)")
    full = (session.python, django) in FULL
    narrowed = bool(session.posargs)
    args = session.posargs or (["-m", "not slow and not browser"] if not full else [])
    passes = {"sqlite": ("SQLite", args),
              "postgres": ("PostgreSQL", ["--ds=tests.settings_postgres", *args])}
    failed = [label for label, pass_args in (passes[name] for name in pass_names)
              if not _pytest(session, label, pass_args, narrowed)]
    if failed:
        session.error(f"failed: {', '.join(failed)} pass")


def _the_wheel(session: nox.Session) -> Path:
    wheels = sorted(DIST.glob("django_storage_guard-*.whl"))
    if not wheels:
        session.error("no wheel in dist/: run `nox -s build` (scripts/test does) first")
    return wheels[-1]


def _install(session: nox.Session, wheel: Path, django: str) -> None:
    """Dependencies once per virtualenv (a stamp of what was asked); the wheel every run."""
    spec = [f"django>={django},<{_next_minor(django)}", f"{wheel}[test]"]
    stamp = Path(session.virtualenv.location) / ".deps-stamp"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + django.encode()).hexdigest()
    if not stamp.exists() or stamp.read_text() != wanted:
        session.install(*spec)
        if _ver(django) >= (6, 0):  # the built-in django.tasks only: prove the backport unused
            _uninstall(session, "django-tasks")
        stamp.write_text(wanted)
    session.install("--no-deps", "--force-reinstall", str(wheel))


def _uninstall(session: nox.Session, name: str) -> None:
    if session.venv_backend == "uv":
        session.run_install("uv", "pip", "uninstall", name)
    else:
        session.run("python", "-m", "pip", "uninstall", "-q", "-y", name)


def _next_minor(version: str) -> str:
    major, minor = _ver(version)
    return f"{major}.{minor + 1}"


def _scratch_copy(session: nox.Session) -> Path:
    """What the tests need, outside the source tree: no ``storage_guard/`` beside them."""
    workdir = Path(session.create_tmp()) / "suite"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=ignore)
        else:
            shutil.copy2(source, workdir / name)
    return workdir


def _pytest(session: nox.Session, label: str, args: list[str], narrowed: bool) -> bool:
    """pytest's exit 5 (no tests ran) fails a whole-suite pass. With tests named on the command
    line, one pass may well select none (a PostgreSQL-only test in the SQLite pass): conftest.py
    then turns 5 into 0 and says so (STORAGE_GUARD_TEST_ALLOW_EMPTY)."""
    session.log(f"== {label}: pytest {' '.join(args)}")
    env = {"STORAGE_GUARD_TEST_ALLOW_EMPTY": "1" if narrowed else "0"}
    try:
        session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10",
                    *args, env=env)
    except nox.command.CommandFailed:  # run the next pass too, then fail the cell
        return False
    return True
