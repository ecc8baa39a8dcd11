"""Bearer-token authentication, file format as kube-apiserver's ``--token-auth-file``.

Each line of the token file is ``token,user,uid,"group1,group2"``. A token
names a user; authorization (later: per-node tokens limited to their own
Node and Pods) keys off that user name, never off the token itself.
"""
from __future__ import annotations

import csv
import io
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from storage.errors import Unauthorized

TOKEN_FILE = "tokens.csv"
ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = field(default_factory=tuple)

    def is_admin(self) -> bool:
        return "system:masters" in self.groups


ANONYMOUS = User("system:anonymous", groups=("system:unauthenticated",))


class TokenAuth:
    """Maps bearer tokens to users. ``enabled=False`` admits every request as admin (tests of other layers only)."""

    def __init__(self, tokens: dict[str, User] | None = None, *, enabled: bool = True) -> None:
        self._tokens: dict[str, User] = dict(tokens or {})
        self.enabled = enabled

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "TokenAuth":
        return cls(read_token_file(path))

    @classmethod
    def disabled(cls) -> "TokenAuth":
        return cls(enabled=False)

    def add(self, token: str, user: User) -> None:
        if not token or "," in token:
            raise ValueError("token: must be non-empty and contain no comma")
        self._tokens[token] = user

    def users(self) -> list[User]:
        return list(self._tokens.values())

    def authenticate(self, authorization: str | None) -> User:
        """The user behind an ``Authorization`` header value; Unauthorized when missing or unknown."""
        if not self.enabled:
            return User(ADMIN_USER, groups=ADMIN_GROUPS)
        if not authorization:
            raise Unauthorized("Unauthorized")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Unauthorized")
        user = self._tokens.get(token)
        if user is None:
            raise Unauthorized("Unauthorized")
        return user


def read_token_file(path: str | os.PathLike[str]) -> dict[str, User]:
    tokens: dict[str, User] = {}
    text = Path(path).read_text(encoding="utf-8")
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise ValueError(f"{path}:{lineno}: expected token,user[,uid[,groups]]")
        token, user = row[0].strip(), row[1].strip()
        uid = row[2].strip() if len(row) > 2 else ""
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        tokens[token] = User(user, uid, groups)
    return tokens


def append_token(path: str | os.PathLike[str], token: str, user: User) -> None:
    """Add one line to the token file, creating it private (0600) if missing."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow([token, user.name, user.uid, ",".join(user.groups)])


def ensure_admin_token(data_dir: str | os.PathLike[str]) -> str:
    """The admin token in ``data_dir``'s token file, created at random the first time."""
    path = Path(data_dir) / TOKEN_FILE
    if path.exists():
        for token, user in read_token_file(path).items():
            if user.name == ADMIN_USER:
                return token
    token = secrets.token_urlsafe(32)
    append_token(path, token, User(ADMIN_USER, ADMIN_USER, ADMIN_GROUPS))
    return token


def load_token_auth(data_dir: str | os.PathLike[str]) -> TokenAuth:
    ensure_admin_token(data_dir)
    return TokenAuth.from_file(Path(data_dir) / TOKEN_FILE)
