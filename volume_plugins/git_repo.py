"""``gitRepo`` (deprecated in Kubernetes, still served by its kubelet): an emptyDir into which the host's
``git`` clones ``repository`` and checks out ``revision`` (SV2-SV4), as Kubernetes' git_repo plugin:

* ``git clone -- <repository> [<directory>]`` in the volume's directory;
* with a revision, ``git checkout <revision>`` and ``git reset --hard`` in the clone (``directory``, or
  ``.`` for the volume itself, or else the one directory the clone made);
* done once per pod volume: a marker under the pod's ``plugins/`` directory says it is ready.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage.errors import PermanentError, TemporaryError
from storage.system.executor import CommandError
from volume_plugins.base import VolumeContext, VolumePlugin


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

    def _git(self, ctx: VolumeContext, *args: str) -> None:
        try:
            ctx.executor.run(["git", *args], timeout=300.0)
        except CommandError as exc:
            raise TemporaryError(f"gitRepo: git {args[2] if args[:1] == ('-C',) else args[0]} failed: {exc}",
                                 delay=10.0) from exc

    def setup(self, ctx: VolumeContext) -> Path:
        repository, revision, directory = validate(self.spec(ctx.source))
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
        self._git(ctx, "-C", str(target), "clone", "--", repository, *([directory] if directory else []))
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
            self._git(ctx, "-C", str(subdir), "checkout", revision)
            self._git(ctx, "-C", str(subdir), "reset", "--hard")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return target
