"""Where `import petrel` finds libpetrel.so: PETREL_LIBRARY, the package's own copy, then the
system's library path; and an error that names every place tried. Each case imports the
package from the source tree (which has no copy of the library) in a fresh interpreter."""
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src"


def library() -> Path:
    """The libpetrel.so these tests run with (tools/test.sh sets PETREL_LIBRARY)."""
    import petrel
    return Path(petrel._lib.lib._name)


def run(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PETREL_LIBRARY", "LD_LIBRARY_PATH")}
    code = "import petrel, petrel._lib as l; print(l.lib._name)"
    return subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(SOURCE), **env},
                          capture_output=True, text=True, timeout=60)


def test_petrel_library_is_used_first():
    r = run({"PETREL_LIBRARY": str(library())})
    assert r.returncode == 0 and r.stdout.strip() == str(library()), r.stderr


def test_the_system_library_path_is_the_last_resort():
    r = run({"LD_LIBRARY_PATH": str(library().parent)})
    assert r.returncode == 0, r.stderr
    assert "libpetrel.so" in r.stdout


@pytest.mark.skipif(ctypes.util.find_library("petrel") is not None, reason="a libpetrel.so is installed system-wide")
def test_nothing_found_says_every_place_tried():
    assert not (SOURCE / "petrel" / "libpetrel.so").exists()
    r = run({"PETREL_LIBRARY": "/nonexistent/libpetrel.so"})
    assert r.returncode != 0
    assert "PETREL_LIBRARY=/nonexistent/libpetrel.so (no such file)" in r.stderr
    assert "(the package's copy)" in r.stderr and "system's library path" in r.stderr
    assert "pip install ./bindings/python" in r.stderr


def install_layout(folder: Path, with_dev_link: bool = True) -> Path:
    """`make install`'s layout in `folder`: libpetrel.so.X.Y.Z, and libpetrel.so.0 (the
    soname) and libpetrel.so as symlinks to it."""
    real = folder / "libpetrel.so.0.2.0"
    real.symlink_to(library().resolve())
    (folder / "libpetrel.so.0").symlink_to(real.name)
    if with_dev_link:
        (folder / "libpetrel.so").symlink_to("libpetrel.so.0")
    return folder / "libpetrel.so"


def test_petrel_library_may_be_a_symlink(tmp_path):
    link = install_layout(tmp_path)
    r = run({"PETREL_LIBRARY": str(link)})
    assert r.returncode == 0 and r.stdout.strip() == str(link), r.stderr


@pytest.mark.skipif(ctypes.util.find_library("petrel") is not None, reason="a libpetrel.so is installed system-wide")
def test_the_soname_is_found_without_the_development_link(tmp_path):
    install_layout(tmp_path, with_dev_link=False)
    r = run({"LD_LIBRARY_PATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "libpetrel.so.0"
