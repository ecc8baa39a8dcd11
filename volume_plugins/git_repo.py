"""``gitRepo`` (deprecated in Kubernetes, still served by its kubelet): an emptyDir into which the host's
``git`` clones ``repository`` and checks out ``revision`` (SV2-SV4), as Kubernetes' git_repo plugin:

* ``git clone -- <repository> [<directory>]`` in the volume's directory;
* with a revision, ``git checkout <revision>`` and ``git reset --hard`` in the clone (``directory``, or
  ``.`` for the volume itself, or else the one directory the clone made);
* done once per pod volume: a marker under the pod's ``plugins/`` directory says it is ready.

The clone runs as root, so it is limited to what a pod may ask of the network (SV10): only ``http``,
``https`` and ``git://`` repositories, without root's git configuration or credentials. A local path,
``file://``, ``ssh`` (root's keys) or another transport (``ext::`` runs a command) would let any pod copy
what root can read on the host, which no pod may see otherwise (Kubernetes disabled its gitRepo driver
by default in 1.33 for the same reason).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from storage.errors import PermanentError, TemporaryError
from storage.system.executor import CommandError
from volume_plugins.base import VolumeContext, VolumePlugin


REMOTE_PROTOCOLS = ("http", "https", "git")
_REMOTE = re.compile(rf"^(?:{'|'.join(REMOTE_PROTOCOLS)})://[^/\s]+", re.IGNORECASE)


def check_remote(repository: str) -> None:
    """SV10: refuse anything but an http, https or git:// repository."""
    if not _REMOTE.match(repository):
        raise PermanentError(
            f'gitRepo.repository: Invalid value: "{repository}": this node clones only http, https and git:// '
            "repositories: the clone runs as root, and a local path, file://, ssh or another transport would "
            "let the pod read what root can")


def validate(spec: dict[str, object]) -> tuple[str, str, str]:
    """(repository, revision, directory); Kubernetes' validation of a gitRepo source (SV3)."""
    repository = str(spec.get("repository") or "")
    revision = str(spec.get("revision") or "")
    directory = str(spec.get("directory") or "")
    if not repository:
        raise PermanentError("gitRepo.repository: Required value")
    if repository.startswith("-"):
        raise PermanentError(f'gitRepo.repository: Invalid value: "{repository}": must not start with "-"')
    if revision.startswith("-"):
        raise PermanentError(f'gitRepo.revision: Invalid value: "{revision}": must not start with "-"')
    if directory:
        if os.path.isabs(directory):
            raise PermanentError(f'gitRepo.directory: Invalid value: "{directory}": must be a relative path')
        if ".." in Path(directory).parts:
            raise PermanentError(f'gitRepo.directory: Invalid value: "{directory}": must not contain \'..\'')
        if directory.startswith("-"):
            raise PermanentError(f'gitRepo.directory: Invalid value: "{directory}": must not start with "-"')
    return repository, revision, directory


class GitRepoPlugin(VolumePlugin):
    name = "kubernetes.io/git-repo"
    source_key = "gitRepo"

    def _marker(self, ctx: VolumeContext) -> Path:
        # pods/<uid>/volumes/kubernetes.io~git-repo/<volume> -> pods/<uid>/plugins/kubernetes.io~git-repo/<volume>/ready
        pod_dir = ctx.target.parents[2]
        return pod_dir / "plugins" / self.dir_name / ctx.volume_name / "ready"

    def _git(self, ctx: VolumeContext, home: str, *args: str) -> None:
        # git reads these from its environment; env(1) sets them for it alone. Redirects and submodules are
        # held to the same protocols; root's and the system's configuration (credential helpers, URL
        # rewrites, hooks paths) are not read.
        argv = ["env", f"GIT_ALLOW_PROTOCOL={':'.join(REMOTE_PROTOCOLS)}", "GIT_CONFIG_NOSYSTEM=1",
                "GIT_CONFIG_GLOBAL=/dev/null", f"HOME={home}", "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false",
                "SSH_ASKPASS=/bin/false", "git", *args]
        try:
            ctx.executor.run(argv, timeout=300.0)
        except CommandError as exc:
            shown = str(exc).replace("env exited", "git exited", 1)
            raise TemporaryError(f"gitRepo: git {args[2] if args[:1] == ('-C',) else args[0]} failed: {shown}",
                                 delay=10.0) from exc

    def setup(self, ctx: VolumeContext) -> Path:
        repository, revision, directory = validate(self.spec(ctx.source))
        check_remote(repository)
        marker = self._marker(ctx)
        if marker.exists():
            return ctx.target
        if shutil.which("git") is None:
            raise TemporaryError("gitRepo: git is not installed on this node (Debian package git)", delay=30.0)
        target = ctx.target
        if target.exists():  # a clone that did not finish: start again
            shutil.rmtree(target)
        target.mkdir(parents=True)
        os.chmod(target, 0o777)  # an emptyDir: any user in the pod may write
        with tempfile.TemporaryDirectory(prefix="stowage-git-home-") as home:
            self._clone(ctx, home, target, repository, revision, directory)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return target

    def _clone(self, ctx: VolumeContext, home: str, target: Path, repository: str, revision: str,
               directory: str) -> None:
        self._git(ctx, home, "-C", str(target), "clone", "--", repository, *([directory] if directory else []))
        if revision:
            if directory == ".":
                subdir = target
            elif directory:
                subdir = target / directory
            else:
                entries = list(target.iterdir())
                if len(entries) != 1:
                    raise PermanentError(f"gitRepo: unexpected directory contents after clone: {len(entries)} entries")
                subdir = entries[0]
            self._git(ctx, home, "-C", str(subdir), "checkout", revision)
            self._git(ctx, home, "-C", str(subdir), "reset", "--hard")
