"""Store contract, list pages (``list_page``): every test runs on SQLite and on PostgreSQL.

Rule C1 (docs/semantics.md): the pages of one list are one snapshot, the revision the first page was
read at, whatever is created, changed or deleted between pages. C2: a page is refused as Gone once
the store has compacted past that revision, and never before.
"""
from __future__ import annotations

from typing import Any

import pytest

from storage.errors import BadRequest, Gone
from storage.store.base import ListPage
from storage.store.sql import SqlStore

CM = "configmaps"


def cm(namespace: str, name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": {"v": "0"}}


def keys(page: ListPage) -> list[tuple[str, str]]:
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in page.items]


def all_pages(store: SqlStore, limit: int, **kw: Any) -> list[ListPage]:
    pages = [store.list_page(CM, limit=limit, **kw)]
    while pages[-1].next_after is not None:
        pages.append(store.list_page(CM, limit=limit, after=pages[-1].next_after, revision=pages[0].revision, **kw))
    return pages


def seed(store: SqlStore) -> list[dict[str, Any]]:
    return [store.create(CM, cm(ns, f"c{i}", parity=str(i % 2))) for ns in ("a", "b") for i in range(5)]


def test_pages_cover_the_list_in_key_order_with_remaining_counts_C1(store: SqlStore) -> None:
    seed(store)
    full, revision = store.list(CM)
    pages = all_pages(store, 3)
    assert [len(p.items) for p in pages] == [3, 3, 3, 1]
    assert [k for p in pages for k in keys(p)] == [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in full]
    assert [o for p in pages for o in p.items] == full
    assert {p.revision for p in pages} == {revision}
    assert [p.remaining for p in pages] == [7, 4, 1, None]
    assert [p.next_after for p in pages] == [("a", "c2"), ("b", "c0"), ("b", "c3"), None]
    # One namespace, and no limit after a key: the rest in one page.
    in_b = store.list_page(CM, "b", limit=2)
    assert keys(in_b) == [("b", "c0"), ("b", "c1")] and in_b.remaining == 3
    rest = store.list_page(CM, "b", limit=None, after=in_b.next_after, revision=in_b.revision)
    assert keys(rest) == [("b", "c2"), ("b", "c3"), ("b", "c4")] and rest.next_after is None


def test_later_pages_show_the_first_pages_revision_whatever_changes_C1(store: SqlStore) -> None:
    before = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in seed(store)}
    first = store.list_page(CM, limit=3)
    assert keys(first) == [("a", "c0"), ("a", "c1"), ("a", "c2")]
    # Between pages: deletes, creates and updates ahead of and behind the cursor.
    store.delete(CM, "b", "c1")
    store.delete(CM, "a", "c1")
    store.create(CM, cm("a", "c3a"))
    store.create(CM, cm("b", "c9"))
    changed = dict(store.get(CM, "b", "c3"), data={"v": "changed"})
    store.update(CM, changed)
    store.delete(CM, "a", "c4")
    store.create(CM, cm("a", "c4"))  # the same name again: a new object
    rest: list[ListPage] = []
    page = first
    while page.next_after is not None:
        page = store.list_page(CM, limit=3, after=page.next_after, revision=first.revision)
        rest.append(page)
    listed = [o for p in [first, *rest] for o in p.items]
    # The counts are of the snapshot too: deleted objects still count, new ones do not.
    assert [p.remaining for p in rest] == [4, 1, None]
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in listed} == before
    assert len(listed) == len(before), "no object twice"
    assert all(p.revision == first.revision for p in rest)
    # A new list sees the changes.
    now = {(o["metadata"]["namespace"], o["metadata"]["name"]) for p in all_pages(store, 4) for o in p.items}
    assert ("a", "c3a") in now and ("b", "c1") not in now and store.get(CM, "b", "c3")["data"] == {"v": "changed"}


def test_a_filtered_page_reads_on_until_it_is_full_and_counts_nothing_C1(store: SqlStore) -> None:
    seed(store)
    pages = all_pages(store, 2, label_selector="parity=1")
    # As etcd3's lister: a page full before the last key gives a token even if nothing after it
    # matches (b/c4 does not), and the last page is then empty.
    assert [keys(p) for p in pages] == [[("a", "c1"), ("a", "c3")], [("b", "c1"), ("b", "c3")], []]
    assert all(p.remaining is None for p in pages)
    # ``accept`` filters like a selector: the page is still filled to the limit.
    only_b = store.list_page(CM, limit=3, accept=lambda o: o["metadata"]["namespace"] == "b")
    assert keys(only_b) == [("b", "c0"), ("b", "c1"), ("b", "c2")] and only_b.remaining is None
    assert store.list_page(CM, limit=3, label_selector="parity=7").items == []


def test_compaction_keeps_what_a_page_needs_and_gone_after_it_C2(store: SqlStore) -> None:
    seed(store)
    store.compact(0)  # every version is now at or below the compacted revision
    first = store.list_page(CM, limit=4)
    assert first.revision == store.current_revision()
    # Objects last written before the compaction change after the first page: their old versions
    # are what the next pages must show.
    for name in ("c2", "c4"):
        store.update(CM, dict(store.get(CM, "b", name), data={"v": "new"}))
    store.delete(CM, "b", "c0")
    second = store.list_page(CM, limit=10, after=first.next_after, revision=first.revision)
    assert keys(second) == [("a", "c4"), ("b", "c0"), ("b", "c1"), ("b", "c2"), ("b", "c3"), ("b", "c4")]
    assert all(o["data"] == {"v": "0"} for o in second.items)
    store.compact(0)
    with pytest.raises(Gone):
        store.list_page(CM, limit=10, after=first.next_after, revision=first.revision)
    # A page at the compacted revision itself still works.
    latest = store.list_page(CM, limit=10)
    assert store.list_page(CM, limit=1, after=("a", "c0"), revision=latest.revision).items[0]["metadata"]["name"] == "c1"


def test_versions_kept_for_pages_survive_a_restore_and_never_reach_watchers_C2(store: SqlStore) -> None:
    seed(store)
    store.restart_history()  # as after a restore: no history at all
    first = store.list_page(CM, limit=5)
    store.update(CM, dict(store.get(CM, "b", "c1"), data={"v": "new"}))
    second = store.list_page(CM, limit=5, after=first.next_after, revision=first.revision)
    assert [o["data"]["v"] for o in second.items] == ["0"] * 5
    # A watch from the compacted revision starts with what happened after it, not with the kept versions.
    with store.watch(CM, since=first.revision) as watcher:
        event = watcher.get(timeout=30)
        assert event is not None and event.type == "MODIFIED" and event.object["data"] == {"v": "new"}


def test_a_revision_newer_than_the_store_is_bad_request(store: SqlStore) -> None:
    seed(store)
    with pytest.raises(BadRequest):
        store.list_page(CM, limit=1, after=("a", "c0"), revision=store.current_revision() + 5)


def test_kept_versions_are_not_history_a_watcher_behind_compaction_reads_C2(store: SqlStore) -> None:
    """The watch poller notices it fell behind compaction by a gap before the first event it reads:
    a version kept for pages (at or below the compacted revision) must never fill that gap."""
    seed(store)
    start = store.current_revision()
    store.update(CM, dict(store.get(CM, "a", "c0"), data={"v": "1"}))  # start + 1: the newest of its key, kept
    store.update(CM, dict(store.get(CM, "a", "c1"), data={"v": "1"}))
    compacted = store.compact(0)
    store.update(CM, dict(store.get(CM, "a", "c1"), data={"v": "2"}))
    assert [int(row[0]) for row in store._events(start, None)] == [compacted + 1]
