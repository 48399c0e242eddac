"""The coordinator's stream journal: what a restarted coordinator reads to resume the streams of a node lost
while no coordinator watched."""

from __future__ import annotations

import stat

from pipeline.cluster.journal import FILE_NAME, StreamJournal

ENTRY = {"source": {"uri": "rtsp://user:secret@cam/1", "name": "gate"}, "needs": {}, "node": "node-1",
         "generation": 3, "open_actions": {"approach": 0.8}, "last_t": 12.5}


def test_a_saved_journal_reads_back_whole_and_only_its_owner_may_read_it(tmp_path):
    journal = StreamJournal(tmp_path / "state")
    journal.save({"gate": ENTRY})
    assert StreamJournal(tmp_path / "state").load() == {"gate": ENTRY}
    mode = stat.S_IMODE((tmp_path / "state" / FILE_NAME).stat().st_mode)
    assert mode == 0o600, oct(mode)  # sources may hold credentials
    assert [p.name for p in (tmp_path / "state").iterdir()] == [FILE_NAME]  # no temporary file left


def test_an_unchanged_journal_is_not_written_again(tmp_path):
    journal = StreamJournal(tmp_path)
    journal.save({"gate": ENTRY})
    (tmp_path / FILE_NAME).write_text('{"streams": {}}')  # changed behind its back: a rewrite would undo it
    journal.save({"gate": dict(ENTRY)})
    assert StreamJournal(tmp_path).load() == {}
    journal.save({})
    assert StreamJournal(tmp_path).load() == {}


def test_a_missing_or_damaged_journal_reads_as_empty(tmp_path, caplog):
    assert StreamJournal(tmp_path).load() == {}
    (tmp_path / FILE_NAME).write_text('{"streams": ')
    assert StreamJournal(tmp_path).load() == {}
    assert "cannot be read" in caplog.text and FILE_NAME in caplog.text
