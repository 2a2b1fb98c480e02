"""The real PyPI packages Evolve synthesises tasks from: pinned, pure Python, their tests in the sdist.

Each was chosen because its sdist ships its own test suite, the suite passes with the base image's pytest
(7.2) in a few seconds, and it needs no compiled code. Dependencies (runtime or test-only) are pinned too and
installed from wheels downloaded on the host: containers have no network.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PackageSpec(BaseModel):
    """How to build and test one PyPI package."""

    name: str
    """The distribution's name on the package index."""
    version: str
    """Pinned version (its sdist is what gets tested)."""
    tests: list[str]
    """Test paths, relative to the sdist's root, given to pytest."""
    code: list[str]
    """Paths (package directories or modules) whose functions and classes get bugs."""
    import_root: str = ""
    """Directory put on `sys.path` so the package imports from the working tree (`src` for src layouts)."""
    pytest_args: list[str] = Field(default_factory=list)
    """Extra pytest arguments (e.g. `-o addopts=` to drop a coverage plugin the image does not have)."""
    deps: list[str] = Field(default_factory=list)
    """Pinned requirements (`name==version`), installed from pure-Python wheels."""

    @property
    def source_name(self) -> str:
        return self.name.lower().replace("_", "-")


NO_ADDOPTS = ["-o", "addopts="]

PACKAGES: list[PackageSpec] = [
    PackageSpec(name="addict", version="2.4.0", tests=["test_addict.py"], code=["addict"]),
    PackageSpec(name="cachetools", version="8.0.3", tests=["tests"], code=["src/cachetools"], import_root="src"),
    PackageSpec(name="inflection", version="0.5.1", tests=["test_inflection.py"], code=["inflection"]),
    PackageSpec(name="isodate", version="0.7.2", tests=["tests"], code=["src/isodate"], import_root="src"),
    PackageSpec(name="parse", version="1.22.4", tests=["tests"], code=["parse.py", "parse"], pytest_args=NO_ADDOPTS),
    PackageSpec(name="pathspec", version="1.1.1", tests=["tests"], code=["pathspec"]),
    PackageSpec(name="six", version="1.17.0", tests=["test_six.py"], code=["six.py"]),
    PackageSpec(name="toolz", version="1.2.0", tests=["toolz/tests"], code=["toolz"]),
    PackageSpec(name="webcolors", version="25.10.0", tests=["tests"], code=["src/webcolors"], import_root="src"),
    PackageSpec(name="xmltodict", version="1.0.4", tests=["tests"], code=["xmltodict.py"]),
    PackageSpec(name="semver", version="3.2.0", tests=["tests"], code=["src/semver"], import_root="src",
                pytest_args=NO_ADDOPTS),
    PackageSpec(name="tabulate", version="0.10.0", tests=["test"], code=["tabulate"]),
    PackageSpec(name="python-slugify", version="9.2.0", tests=["tests"], code=["slugify"],
                deps=["text-unidecode==1.3"]),
    PackageSpec(name="humanize", version="4.17.0", tests=["tests"], code=["src/humanize"], import_root="src",
                pytest_args=["--ignore=tests/test_benchmarks.py"],  # needs pytest-benchmark's fixture
                deps=["freezegun==1.5.5", "python-dateutil==2.9.0.post0", "six==1.17.0"]),
    PackageSpec(name="boltons", version="26.2.0", tests=["tests"], code=["boltons"]),
]
"""The catalog: `evolve tasks synthesize pypi` means all of them, `NAME` or `NAME==VERSION` one."""


def find(name: str, version: str | None = None) -> PackageSpec | None:
    key = name.lower().replace("_", "-")
    for spec in PACKAGES:
        if spec.source_name == key and (version is None or spec.version == version):
            return spec
    return None
