"""The installed package is one namespace: ``vmroc.inject``, never a top-level ``inject``;
without any extra and without the C module it imports whole and its unit tests pass, on
every CPython vmroc supports that this machine has."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("inject", "introspect", "detect", "rca", "service", "deploy")
PYENV = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
# what the extras bring; none of it may be needed by the main path
OPTIONAL = ("libvmi", "volatility3", "psycopg", "selenium")
# unit tests run in the bare venv: fast ones that reach every stage, the optional
# readers, the accelerator (skipped there), the CLI and the service
BARE_TESTS = ("test_accel", "test_btf", "test_layers", "test_kallsyms", "test_detect",
              "test_recording", "test_import_direction", "test_fingerprint", "test_lab_units",
              "test_cli", "test_events", "test_service")
VERSIONS = ("3.11", "3.12")


# not the package's: left out of the copy the wheels are built from
NOT_SOURCE = {".git", ".venv", "build", "data", "docs", "tests", "bench", ".pytest_cache"}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The working tree's package sources, copied: setuptools builds in the tree, and a
    checkout's build/ keeps modules its sources no longer have (they went into wheels)."""
    def ignore(folder, names):
        top = NOT_SOURCE if Path(folder) == ROOT else set()
        return [n for n in names if n in top or n == "__pycache__" or n.endswith(
            (".egg-info", ".so", ".pyc"))]
    return Path(shutil.copytree(ROOT, tmp_path_factory.mktemp("source") / "vmroc",
                                ignore=ignore))


def _build_wheel(python: str, source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(out), str(source)],
                   check=True, capture_output=True)
    return next(out.glob("vmroc-*.whl"))


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    return _build_wheel(sys.executable, source, tmp_path_factory.mktemp("wheel"))


def _python(version: str) -> str | None:
    """An interpreter of this ``major.minor``: this one, on PATH, or pyenv's."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}"),
                  *sorted(map(str, PYENV.glob(f"{version}.*/bin/python{version}")), reverse=True)]
    for cand in filter(None, candidates):
        probe = subprocess.run([cand, "-c", "import sys, venv; "
                                "print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return cand
    return None


def test_wheel_holds_only_the_vmroc_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"vmroc"}
    for stage in STAGES:
        assert f"vmroc/{stage}/__init__.py" in names
    assert "vmroc/deploy/campaigns/demo.yaml" in names
    assert "vmroc/deploy/guest/init.sh" in names


def test_wheel_in_a_fresh_venv_imports_vmroc_inject_not_inject(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True)
    # this environment's packages give the dependencies, behind the venv's own (a path in
    # a .pth: the .pth files there, such as an editable vmroc's, stay off)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "deps.pth").write_text("".join(f"{p}\n" for p in ours))
    probe = ("import importlib.util, sys, vmroc.inject, vmroc.rca\n"
             "print(vmroc.inject.__file__)\n"
             f"print([s for s in {STAGES!r} if importlib.util.find_spec(s)])\n")
    out = subprocess.run([py, "-c", probe], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out[0].startswith(str(venv)), out
    assert out[1] == "[]"


IMPORT_ALL = """
import importlib, pkgutil, sys
names = []
for top in ("vmroc",) + tuple("vmroc." + s for s in sys.argv[1:]):
    pkg = importlib.import_module(top)
    names += [top] + [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""

# each optional part, missing, is one line naming the extra that brings it
MISSING_EXTRAS = """
import inspect
from vmroc.introspect._accel import available
from vmroc.introspect.backends import LibvmiKernel, default_backend
from vmroc.introspect.errors import IntrospectError
from vmroc.introspect.volatility import VolatilityReader
from vmroc.service.store import Store, StoreError
assert not available() and default_backend() == "mmap"
# the readers import their library before they look at any argument
nones = lambda cls: [None] * len(inspect.signature(cls).parameters)
for make in (lambda: LibvmiKernel(*nones(LibvmiKernel)),
             lambda: VolatilityReader(*nones(VolatilityReader)),
             lambda: Store("postgresql://u@localhost/db")):
    try:
        make()
    except (IntrospectError, StoreError) as exc:
        print(exc)
"""


def _bare_run(python: str, wheel: Path, source: Path, tmp: Path) -> dict:
    """The wheel, no extra, into a fresh venv of ``python``, its C module deleted; then
    what the test checks, run there."""
    if python != sys.executable:
        # its own copy: two builds in one tree at once would share its build/
        wheel = _build_wheel(python, Path(shutil.copytree(source, tmp / "source")), tmp / "wheel")
    venv = tmp / "venv"
    # fast: no ensurepip in the venv (this pip installs into it), no .pyc at install
    # (only what is imported gets compiled, once, under the pycache prefix)
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    out = {"pip": subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q",
                                  "--no-compile", "--disable-pip-version-check", str(wheel),
                                  "pytest"], capture_output=True, text=True)}
    if out["pip"].returncode:
        return out
    run = {"cwd": tmp, "capture_output": True, "text": True,
           "env": {k: v for k, v in os.environ.items() if k not in
                   ("PYTHONPATH", "VMROC_REQUIRE_ACCEL", "PYTHONDONTWRITEBYTECODE")}
           | {"PYTHONPYCACHEPREFIX": str(tmp / "pycache")}}
    # as if built without a compiler: the C module is gone
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, **run).stdout.strip()
    for so in (Path(site) / "vmroc" / "introspect" / "_accel").glob("_vmread*.so"):
        so.unlink()
    out["absent"] = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in "
                                    f"{OPTIONAL!r} if u.find_spec(m)])"], **run)
    out["import"] = subprocess.run([py, "-c", IMPORT_ALL, *STAGES], **run)
    out["hints"] = subprocess.run([py, "-c", MISSING_EXTRAS], **run)
    # the repository's tests on the installed package: --import-mode=append keeps the
    # checkout's folders behind site-packages, so `vmroc` is the venv's
    tests = [str(ROOT / "tests" / "unit" / f"{name}.py") for name in BARE_TESTS]
    out["pytest"] = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                    "--import-mode=append", *tests], **run)
    return out


@pytest.fixture(scope="module")
def bare(wheel, source, tmp_path_factory) -> dict:
    """Per version: None (no such interpreter here) or the runs of ``_bare_run``; the
    versions are prepared and tested in parallel (most of the time is pip unpacking)."""
    pythons = {v: _python(v) for v in VERSIONS}
    with ThreadPoolExecutor(len(VERSIONS)) as pool:
        jobs = {v: pool.submit(_bare_run, py, wheel, source, tmp_path_factory.mktemp(f"bare{v}"))
                for v, py in pythons.items() if py}
        return {v: jobs[v].result() if v in jobs else None for v in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
def test_wheel_without_extras_or_c_module_imports_and_passes_unit_tests(version, bare):
    runs = bare[version]
    if runs is None:
        pytest.skip(f"no python{version} with venv on this machine")
    assert runs["pip"].returncode == 0, f"pip install (no extras) failed:\n{runs['pip'].stderr}"
    assert runs["absent"].stdout.strip() == "[]", runs["absent"].stderr
    assert runs["import"].returncode == 0, runs["import"].stderr
    assert int(runs["import"].stdout) > 100     # every module of every stage
    assert runs["hints"].returncode == 0, runs["hints"].stderr
    lines = runs["hints"].stdout.splitlines()
    assert len(lines) == 3, lines
    for line, extra in zip(lines, ("libvmi", "volatility", "postgres")):
        assert f"pip install 'vmroc[{extra}]'" in line
    proc = runs["pytest"]
    tail = "\n".join(proc.stdout.splitlines()[-30:]) + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "C accelerator was not built" in proc.stdout, tail     # skipped, not failed
