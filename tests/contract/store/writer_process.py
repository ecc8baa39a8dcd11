"""Run as a separate process by the contract tests: create, update and delete objects in a store.

usage: writer_process.py URL RESOURCE PREFIX COUNT
Each object is created, updated once, and every third one deleted.
"""
from __future__ import annotations

import sys

from storage.store.sql import SqlStore


def main() -> None:
    url, resource, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = SqlStore(url)
    try:
        for i in range(count):
            obj = store.create(resource, {"metadata": {"name": f"{prefix}-{i}", "namespace": "ns"}, "spec": {"i": i}})
            obj["spec"]["touched"] = True
            store.update(resource, obj)
            if i % 3 == 0:
                store.delete(resource, "ns", f"{prefix}-{i}")
    finally:
        store.close()


if __name__ == "__main__":
    main()
