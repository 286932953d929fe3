"""The emulated board's Debian mirror comes from the host's apt sources (one-line .list files
and deb822 .sources), `--mirror` or $NRQC_DEBIAN_MIRROR; with none, a clear error naming them."""
from __future__ import annotations

from pathlib import Path

import pytest

from nrqc.emulator import rootfs
from nrqc.errors import NrqcError
from tests.conftest import run_cli


def _apt(tmp_path: Path, main: str | None = None, **parts: str) -> Path:
    """An /etc/apt-like folder: sources.list (if given) and sources.list.d/NAME files."""
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    if main is not None:
        (apt / "sources.list").write_text(main)
    for name, text in parts.items():
        (apt / "sources.list.d" / name.replace("__", ".")).write_text(text)
    return apt


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    monkeypatch.delenv(rootfs.MIRROR_ENV, raising=False)
    rootfs.use_mirror(None)
    yield
    rootfs.use_mirror(None)


def test_one_line_sources_list(tmp_path):
    apt = _apt(tmp_path, "# a comment\n"
                         "deb-src http://src.example/debian bookworm main\n"
                         "deb http://security.debian.org/debian-security bookworm-security main\n"
                         "deb [arch=amd64 signed-by=/k.gpg] http://apt.corp.example:3142/deb/ bookworm main contrib\n")
    assert rootfs.host_debian_mirrors(apt) == ["http://apt.corp.example:3142/deb"]
    assert rootfs.debian_mirror(apt) == "http://apt.corp.example:3142/deb"


def test_list_files_in_sources_list_d(tmp_path):
    # No sources.list at all; a vendor repository and Ubuntu are not Debian mirrors.
    apt = _apt(tmp_path, None,
               vendor__list="deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
               ubuntu__list="deb http://archive.ubuntu.com/ubuntu jammy main\n",
               local__list="deb http://10.0.0.5/mirror trixie main\n")
    assert rootfs.host_debian_mirrors(apt) == ["http://10.0.0.5/mirror"]


def test_deb822_sources(tmp_path):
    apt = _apt(tmp_path, None, debian__sources=(
        "Types: deb deb-src\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.lan/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.lan/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "Enabled: no\n"
        "URIs: http://disabled.lan/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"),
        nodesource__sources="Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
                            "Components: main\n")
    assert rootfs.host_debian_mirrors(apt) == ["http://mirror.lan/debian"]


def test_our_suite_is_preferred_over_other_debian_suites(tmp_path):
    apt = _apt(tmp_path, "deb http://sid.lan/debian sid main\n",
               bookworm__sources="Types: deb\nURIs: http://bw.lan/debian\nSuites:\n bookworm\nComponents: main\n")
    assert rootfs.host_debian_mirrors(apt) == ["http://bw.lan/debian", "http://sid.lan/debian"]


def test_option_and_environment_override_the_host(tmp_path, monkeypatch):
    apt = _apt(tmp_path, "deb http://host.lan/debian bookworm main\n")
    monkeypatch.setenv(rootfs.MIRROR_ENV, "http://env.lan/debian")
    assert rootfs.debian_mirror(apt) == "http://env.lan/debian"
    rootfs.use_mirror("http://option.lan/debian")
    assert rootfs.debian_mirror(apt) == "http://option.lan/debian"
    with pytest.raises(NrqcError, match="--mirror 'deb.debian.org': expected a URL"):
        rootfs.use_mirror("deb.debian.org")


def test_nothing_configured_names_the_options(tmp_path):
    apt = _apt(tmp_path, "deb http://archive.ubuntu.com/ubuntu jammy main\n")
    with pytest.raises(NrqcError) as e:
        rootfs.debian_mirror(apt)
    msg = str(e.value)
    assert "--mirror URL" in msg and rootfs.MIRROR_ENV in msg and str(apt) in msg
    assert "\n" not in msg


def test_emulate_rejects_a_malformed_mirror_before_building(tmp_path):
    proc = run_cli("emulate", "arm_cpu", "--mirror", "not a url", check_exit=2,
                   env={"NRQC_CACHE": str(tmp_path / "cache")})
    assert proc.stderr.strip() == "nrqc: error: --mirror 'not a url': expected a URL such as http://HOST/debian or " \
                                  "file:///PATH"
    assert not (tmp_path / "cache").exists()
