"""Puts libpetrel.so into the package, so that `pip install ./bindings/python` gives a package
that imports with nothing else set, and `pip wheel ./bindings/python` a platform wheel
(py3-none-linux_x86_64) that carries the library.

Where the library comes from: PETREL_LIBRARY, if set when building (a libpetrel.so built
before, or a symlink to one, as `make install` lays them out: libpetrel.so -> libpetrel.so.0 ->
libpetrel.so.X.Y.Z; the file itself is copied, as libpetrel.so); else `make lib` in the Petrel
repository around this folder (needs the Swift toolchain). The library has the Swift runtime
and hiredis linked in: at run time it needs only what a Debian system has (libc, libm,
libstdc++, libgcc_s, libz, libssl and libcrypto 3). The repository's LICENSE (MIT) goes into
the package next to the library, as petrel/LICENSE.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent.parent


def library() -> Path:
    given = os.environ.get("PETREL_LIBRARY")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"petrel-ws: PETREL_LIBRARY={given} is not a file")
        return path
    if not (REPOSITORY / "Package.swift").is_file():
        raise SystemExit("petrel-ws: libpetrel.so is built from the Petrel repository around bindings/python; "
                         "build from there (with pip 21.3 or later: an older pip copies the folder away from "
                         "the repository first), or set PETREL_LIBRARY to a libpetrel.so")
    if shutil.which("swift") is None:
        raise SystemExit("petrel-ws: building libpetrel.so needs the Swift toolchain (swift on PATH), "
                         "or set PETREL_LIBRARY to a libpetrel.so built elsewhere")
    subprocess.run(["make", "-C", str(REPOSITORY), "lib"], check=True)
    return REPOSITORY / ".build-static" / "release" / "libpetrel.so"


class BuildWithLibrary(build_py):
    """build_py, plus the library (and the licence) next to the modules."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "petrel" / "libpetrel.so"
        target.parent.mkdir(parents=True, exist_ok=True)
        # The file the symlinks lead to, under the name the package loads (a symlink copied
        # into a wheel would be a dangling one).
        shutil.copyfile(library().resolve(strict=True), target, follow_symlinks=True)
        licence = REPOSITORY / "LICENSE"
        if licence.is_file():
            shutil.copyfile(licence, target.parent / "LICENSE")


class PlatformWheel(bdist_wheel):
    """Not pure (it carries a Linux library), but not tied to one Python: py3-none-<platform>."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", super().get_tag()[2]


class WithLibrary(Distribution):
    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel}, distclass=WithLibrary)
