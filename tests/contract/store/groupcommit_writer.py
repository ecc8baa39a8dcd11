"""Run as a separate process by test_store_groupcommit: THREADS threads create objects forever and
print each name once ``create`` returned (acknowledged), until the process is killed. On exit
(never reached in the test: it is killed) it prints how many transactions carried the writes.

usage: groupcommit_writer.py URL THREADS
"""
from __future__ import annotations

import sys
import threading

from storage.store.sql import SqlStore


def main() -> None:
    url, threads = sys.argv[1], int(sys.argv[2])
    store = SqlStore(url)
    out = threading.Lock()

    def write(k: int) -> None:
        i = 0
        while True:
            name = f"w{k}-{i}"
            store.create("persistentvolumes", {"apiVersion": "v1", "kind": "PersistentVolume",
                                               "metadata": {"name": name}, "spec": {"capacity": {"storage": "1Gi"}}})
            with out:
                sys.stdout.write(name + "\n")
                sys.stdout.flush()
            i += 1

    workers = [threading.Thread(target=write, args=(k,), daemon=True) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
