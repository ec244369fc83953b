"""How the sequencer turns queued references into placements: consents by runs of row
ids, everything else into `ledger_refs`; and what the queue's columns must hold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parcelvault.adapters.db.tables import ledger_entries, ledger_queue
from parcelvault.ledger.log import KINDS, _queue_refs
from parcelvault.services.corrections import ledger_ref


def test_consecutive_consents_placed_consecutively_share_one_run() -> None:
    refs = ["consent:5", "consent:6", None, "consent:7", "kek:1", "consent:8", "consent:9"]
    runs, named = _queue_refs(refs, 100)
    assert runs == [(95, 5, 6), (96, 7, 7), (97, 8, 9)]
    assert named == [("kek:1", 104)]


def test_a_reference_that_only_looks_like_a_consent_is_kept_by_name() -> None:
    runs, named = _queue_refs(["consent:", "consent:12a", "consents:3", "erasure:ab"], 0)
    assert runs == []
    assert named == [("consent:", 0), ("consent:12a", 1), ("consents:3", 2), ("erasure:ab", 3)]


@given(st.lists(st.one_of(st.none(), st.integers(0, 50), st.sampled_from(["kek:1", "x"]))))
def test_every_consent_gets_the_index_of_its_own_entry(items: list[int | str | None]) -> None:
    refs = [f"consent:{item}" if isinstance(item, int) else item for item in items]
    runs, named = _queue_refs(refs, 1000)
    placed = {}
    for offset, first, last in runs:
        assert first <= last
        for row_id in range(first, last + 1):
            placed.setdefault(row_id, []).append(row_id + offset)
    expected: dict[int, list[int]] = {}
    for index, item in enumerate(items, 1000):
        if isinstance(item, int):
            expected.setdefault(item, []).append(index)
    assert placed == expected
    assert named == [(ref, i) for i, ref in enumerate(refs, 1000) if ref in ("kek:1", "x")]


def test_every_entry_kind_fits_the_kind_columns() -> None:
    for table in (ledger_queue, ledger_entries):
        length = table.c.kind.type.length
        assert length is not None
        assert [kind for kind in KINDS if len(kind) > length] == []


def test_a_correction_reference_goes_to_ledger_refs() -> None:
    runs, named = _queue_refs([ledger_ref(7)], 40)
    assert (runs, named) == ([], [("correction:7", 40)])
