"""The ctypes binding of storage/system/libnfs.py against the installed libnfs header (libnfs-dev):
every declared function has the header's number of parameters, pointer-ness of its result, and
struct nfsdirent's fields are in the header's order (NF1)."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

HEADER = Path("/usr/include/nfsc/libnfs.h")


@pytest.fixture(scope="module")
def header() -> str:
    if not HEADER.exists():
        pytest.skip(f"{HEADER} is not installed (Debian libnfs-dev): nothing to check the binding against")
    return HEADER.read_text()


def test_nf1_function_signatures_match_the_header(header: str) -> None:
    from storage.system import libnfs

    try:
        lib = libnfs.library()
    except OSError as exc:
        pytest.skip(f"libnfs is not installed: {exc}")
    checked = 0
    names = re.findall(r'"(nfs_[a-z0-9_]+)": \(', Path(libnfs.__file__).read_text())
    assert len(names) >= 20
    for name in names:
        match = re.search(r"EXTERN\s+([\w\s]+?\**)\s*\**\s*\b" + name + r"\s*\(([^;]*?)\)\s*;", header, re.S)
        assert match, f"{name} is not declared in {HEADER}"
        params = [p.strip() for p in match.group(2).split(",") if p.strip() and p.strip() != "void"]
        function = getattr(lib, name)
        assert len(function.argtypes) == len(params), f"{name}: header has {params}, binding {function.argtypes}"
        returns_pointer = "*" in header[match.start():match.start(2)].split(name)[0]
        binding_pointer = function.restype is not None and (
            function.restype in (ctypes.c_void_p, ctypes.c_char_p) or hasattr(function.restype, "contents"))
        assert returns_pointer == binding_pointer, f"{name}: result pointer-ness differs from the header"
        checked += 1
    assert checked == len(names)


def test_nf1_dirent_layout_matches_the_header(header: str) -> None:
    from storage.system.libnfs import _Dirent

    body = re.search(r"struct nfsdirent\s*\{(.*?)\};", header, re.S)
    assert body
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    fields = [re.sub(r"[*;]", "", decl.split()[-1]) for decl in text.split(";") if decl.strip()]
    assert [f[0] for f in _Dirent._fields_] == fields
