"""The resolver under hostPath and subPath (storage.system.safepath): openat2 with
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS and its O_PATH walk fallback
refuse every way out of the base; a bind of the descriptor is immune to a later swap (A6, A7)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from storage.system import mounts, safepath
from support import need_root

ESCAPES = {
    "symlink at the end": "link-out",
    "symlink in the middle": "link-out/marker",
    "symlink inside the base, in the middle": "link-in/f",
    "symlink inside the base, at the end": "link-in",
    "absolute symlink": "abs/passwd",
    "relative symlink climbing out": "rel-up/outside/marker",
    "dangling symlink": "dangling",
    "dotdot": "d/../../outside",
    "dotdot staying inside": "d/../d",
    "absolute path": "/etc/passwd",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    (base / "d").mkdir(parents=True)
    (base / "d" / "f").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "marker").write_text("outside")
    (base / "link-out").symlink_to(outside)
    (base / "link-in").symlink_to("d")
    (base / "abs").symlink_to("/etc")
    (base / "rel-up").symlink_to("..")
    (base / "dangling").symlink_to("nowhere")
    return base


@pytest.fixture(params=["openat2", "walk"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    if request.param == "openat2" and not safepath.openat2_available():
        pytest.skip("openat2(2) is not available on this kernel/architecture (needs Linux 5.6, x86_64 or arm64)")
    return request.param == "openat2"


def _target(fd: int) -> str:
    try:
        return os.readlink(safepath.fd_path(fd))
    finally:
        os.close(fd)


def test_plain_paths_resolve(tree: Path, use_openat2: bool) -> None:
    assert _target(safepath.open_beneath(tree, "d/f", use_openat2=use_openat2)) == str(tree / "d" / "f")
    assert _target(safepath.open_beneath(tree, "./d", use_openat2=use_openat2)) == str(tree / "d")
    assert _target(safepath.open_beneath(tree, "", use_openat2=use_openat2)) == str(tree)


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escapes_are_refused(tree: Path, use_openat2: bool, case: str) -> None:
    with pytest.raises(safepath.PathEscape):
        os.close(safepath.open_beneath(tree, ESCAPES[case], use_openat2=use_openat2))


def test_magic_links_are_refused(use_openat2: bool) -> None:
    # /proc/self/{root,cwd,exe,fd/N} jump anywhere, whatever their text says.
    for magic in ("root", "cwd", "exe", "fd/0", "root/etc/passwd"):
        with pytest.raises(safepath.PathEscape):
            os.close(safepath.open_beneath("/proc/self", magic, use_openat2=use_openat2))


def test_missing_is_not_an_escape(tree: Path, use_openat2: bool) -> None:
    with pytest.raises(FileNotFoundError):
        safepath.open_beneath(tree, "d/nothing", use_openat2=use_openat2)
    with pytest.raises(NotADirectoryError):
        safepath.open_beneath(tree, "d/f/x", use_openat2=use_openat2)


def test_the_walk_checks_each_component_from_its_parent_descriptor(tree: Path) -> None:
    base_fd = os.open(tree, os.O_PATH | os.O_DIRECTORY)
    try:
        assert _target(safepath.open_beneath_walk(base_fd, "d/f")) == str(tree / "d" / "f")
        for case in ("link-out", "link-in/f", "rel-up/outside", "dangling"):
            with pytest.raises(safepath.PathEscape):
                safepath.open_beneath_walk(base_fd, case)
    finally:
        os.close(base_fd)


def test_creation_never_follows_a_planted_symlink(tree: Path) -> None:
    outside = tree.parent / "outside"
    assert _target(safepath.mkdirs_beneath(tree, "new/a/b")) == str(tree / "new" / "a" / "b")
    with pytest.raises(safepath.PathEscape):
        safepath.mkdirs_beneath(tree, "link-out/created")
    with pytest.raises(safepath.PathEscape):
        safepath.create_file_beneath(tree, "link-out/created")
    (tree / "d" / "file-link").symlink_to(outside / "new-file")
    with pytest.raises(safepath.PathEscape):
        safepath.create_file_beneath(tree, "d/file-link")
    assert sorted(p.name for p in outside.iterdir()) == ["marker"]
    assert _target(safepath.create_file_beneath(tree, "d/g")) == str(tree / "d" / "g")


def test_split_under_compares_components() -> None:
    prefixes = [Path("/data"), Path("/data/deep")]
    assert safepath.split_under("/data/x/y", prefixes) == (Path("/data"), "x/y")
    assert safepath.split_under("/data/deep/z", prefixes) == (Path("/data/deep"), "z")
    assert safepath.split_under("/data", prefixes) == (Path("/data"), "")
    assert safepath.split_under("/database", prefixes) is None
    assert safepath.split_under("/data/../etc", prefixes) is None
    assert safepath.split_under("data/x", prefixes) is None


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    need_root("bind mounts")
    target = tmp_path / "target"
    target.mkdir()
    try:
        yield target
    finally:
        mounts.unmount_all_under(target)


def test_a_bind_of_the_descriptor_ignores_a_later_swap(tree: Path, mounted: Path) -> None:
    """The CVE-2017-1002101 race: checked, then swapped, then mounted. The mount follows the
    descriptor, not the name."""
    fd = safepath.open_beneath(tree, "d")
    try:
        os.rename(tree / "d", tree / "d.old")
        (tree / "d").symlink_to(tree.parent / "outside")
        safepath.bind_fd(fd, mounted)
    finally:
        os.close(fd)
    assert sorted(p.name for p in mounted.iterdir()) == ["f"]
    (mounted / "written").write_text("x")
    assert (tree / "d.old" / "written").exists()
    assert sorted(p.name for p in (tree.parent / "outside").iterdir()) == ["marker"]
