"""gitRepo volumes cloned with the host's git from a repository served by a real git daemon (SV2-SV4, SV10)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from flex_support import FlexEnv
from git_daemon import git_daemon
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from volume_plugins.git_repo import check_remote, validate
from storage.errors import PermanentError
from volume_plugins.registry import default_registry

pytestmark = pytest.mark.root


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def served(flex_env: FlexEnv) -> Iterator[str]:
    """The URL prefix of a git daemon serving ``flex_env.base / "served"``."""
    root = flex_env.base / "served"
    root.mkdir()
    with git_daemon(root) as url:
        yield url


@pytest.fixture
def repo(flex_env: FlexEnv, served: str) -> tuple[str, str, str]:
    """A served repository with two commits: (its git:// URL, first commit, second commit)."""
    path = flex_env.base / "served" / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "file.txt").write_text("one\n")
    git(path, "add", "file.txt")
    git(path, "commit", "-q", "-m", "one")
    first = git(path, "rev-parse", "HEAD")
    (path / "file.txt").write_text("two\n")
    git(path, "commit", "-q", "-am", "two")
    return f"{served}/repo", first, git(path, "rev-parse", "HEAD")


def setup(flex_env: FlexEnv, source: dict) -> tuple[VolumeManager, dict[str, str], dict[str, str]]:
    vm = VolumeManager(flex_env.base / "kubelet", default_registry(volume_plugin_dir=flex_env.plugin_dir))
    paths, errors = vm.setup_pod(PodVolumes("u1", "ns", "p1", [VolumeRequest("src", {"gitRepo": source})]))
    return vm, paths, errors


def test_sv2_clone_at_a_revision_into_the_volume(flex_env: FlexEnv, repo: tuple[str, str, str]) -> None:
    """SV2: no directory -> the clone's own directory, checked out at the revision; done once."""
    path, first, _second = repo
    vm, paths, errors = setup(flex_env, {"repository": path, "revision": first})
    assert errors == {}
    volume = Path(paths["src"])
    assert volume == flex_env.base / "kubelet/pods/u1/volumes/kubernetes.io~git-repo/src"
    assert (volume / "repo" / "file.txt").read_text() == "one\n"
    assert git(volume / "repo", "rev-parse", "HEAD") == first
    (volume / "repo" / "local-change").write_text("kept")
    vm.setup_pod(PodVolumes("u1", "ns", "p1", [VolumeRequest("src", {"gitRepo": {"repository": path, "revision": first}})]))
    assert (volume / "repo" / "local-change").exists()  # not cloned again
    vm.teardown_pod("u1")
    assert not volume.exists()


def test_sv2_directory_dot_is_the_volume_itself_and_no_revision_is_the_default_branch(
        flex_env: FlexEnv, repo: tuple[str, str, str]) -> None:
    """SV2: directory "." -> the volume is the work tree; without a revision, the cloned HEAD."""
    path, _first, second = repo
    vm, paths, errors = setup(flex_env, {"repository": path, "directory": "."})
    assert errors == {}
    assert Path(paths["src"], "file.txt").read_text() == "two\n"
    assert git(Path(paths["src"]), "rev-parse", "HEAD") == second
    vm.teardown_pod("u1")


def test_sv3_sv2_refused_sources_and_a_missing_repository(flex_env: FlexEnv, served: str) -> None:
    """SV3: '-' leading repository/revision and '..' or absolute directories are refused; SV2 a clone
    that fails names git's error."""
    for spec, message in [({"repository": "--upload-pack=touch /tmp/x"}, 'repository: Invalid value'),
                          ({"repository": "r", "revision": "-b"}, "revision: Invalid value"),
                          ({"repository": "r", "directory": "../up"}, "must not contain '..'"),
                          ({"repository": "r", "directory": "/abs"}, "must be a relative path"),
                          ({}, "repository: Required value")]:
        with pytest.raises(PermanentError, match=message):
            validate(spec)
    vm, _paths, errors = setup(flex_env, {"repository": f"{served}/no-such-repo"})
    assert "gitRepo: git clone failed" in errors["src"] and "no such repository" in errors["src"]
    assert "git exited with status 128" in errors["src"]
    vm.teardown_pod("u1")


def test_sv10_only_http_https_and_git_repositories_are_cloned(flex_env: FlexEnv, repo: tuple[str, str, str]) -> None:
    """SV10: the clone runs as root, so a local path, file://, ssh (root's keys) or git's ext:: transport (a
    command) would hand the pod what root can read: each is refused before git runs, the volume stays
    empty and nothing is cloned; the same repository over git:// is cloned."""
    private = flex_env.base / "served" / "repo"
    for repository in (str(private), f"file://{private}", f"root@127.0.0.1:{private}", f"ssh://127.0.0.1{private}",
                       "ext::sh -c touch% /tmp/stowage-sv5-pwned", f"FILE://{private}", f"{private}/.git"):
        with pytest.raises(PermanentError, match="clones only http, https and git://"):
            check_remote(repository)
        vm, _paths, errors = setup(flex_env, {"repository": repository})
        assert "clones only http, https and git://" in errors["src"], (repository, errors)
        vm.teardown_pod("u1")
    assert not Path("/tmp/stowage-sv5-pwned").exists()
    for repository in ("https://github.com/kubernetes/kubernetes", "http://example.com/r.git", "git://127.0.0.1:9/r"):
        check_remote(repository)
    url, _first, second = repo
    vm, paths, errors = setup(flex_env, {"repository": url, "directory": "."})
    assert errors == {} and git(Path(paths["src"]), "rev-parse", "HEAD") == second
    vm.teardown_pod("u1")
