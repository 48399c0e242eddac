"""RunFolder.keep: a run folder deleted by a temp cleaner is made again, and what the running processes
hold (bound sockets, mmap'd metrics files) can be found under the same names again."""

from __future__ import annotations

import mmap
import os
import shutil

import zmq

from pipeline.supervision.run_folder import RunFolder, default_parent


def test_the_folder_goes_under_ipc_dir_else_the_runtime_dir_else_the_temp_dir(tmp_path, monkeypatch) -> None:
    assert default_parent(tmp_path / "ipc") == tmp_path / "ipc"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_parent() == tmp_path
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "not-there"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    assert default_parent() == tmp_path / "t"


def test_a_deleted_folder_comes_back_with_its_sockets_and_metrics_files(tmp_path) -> None:
    folder = RunFolder(tmp_path)
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(folder.endpoint("embed-0"))
    counter = folder.metrics / "counter_4242.db"
    counter.write_bytes(b"\0" * 16)
    writer = open(counter, "r+b")  # noqa: SIM115 (held open like prometheus_client's own)
    mapped = mmap.mmap(writer.fileno(), 0)
    try:
        assert folder.keep(live_pids={4242}) is False
        shutil.rmtree(folder.path)  # the cleaner
        mapped[:5] = b"after"  # the running process goes on counting into the unlinked file
        assert folder.keep(live_pids={4242}) is True and folder.generation == 1
        assert folder.metrics.is_dir() and folder.live.is_dir()
        assert counter.read_bytes()[:5] == b"after"
        # A process started now reaches the socket that is still bound.
        push = context.socket(zmq.PUSH)
        push.connect(folder.endpoint("embed-0"))
        push.send(b"frame")
        assert pull.poll(3000) and pull.recv() == b"frame"
        push.close(linger=0)
        # Its successor binds over the name, and that socket is held from then on.
        pull.close(linger=0)
        pull = context.socket(zmq.PULL)
        pull.bind(folder.endpoint("embed-0"))
        assert not (folder.path / "embed-0").is_symlink()
        folder.keep(live_pids={4242})
        shutil.rmtree(folder.path)
        assert folder.keep(live_pids={4242}) is True and folder.generation == 2
        push = context.socket(zmq.PUSH)
        push.connect(folder.endpoint("embed-0"))
        push.send(b"again")
        assert pull.poll(3000) and pull.recv() == b"again"
        push.close(linger=0)
    finally:
        mapped.close()
        writer.close()
        pull.close(linger=0)
        context.term()
        folder.remove()
    assert not folder.path.exists()


def test_the_live_gauges_of_a_process_that_ended_are_not_put_back(tmp_path) -> None:
    folder = RunFolder(tmp_path)
    for name in ("gauge_livesum_11.db", "gauge_livesum_12.db", "counter_11.db"):
        (folder.metrics / name).write_bytes(b"\0" * 8)
    folder.keep(live_pids={11, 12})
    shutil.rmtree(folder.path)
    folder.keep(live_pids={11})  # 12 died meanwhile
    assert sorted(p.name for p in folder.metrics.iterdir()) == ["counter_11.db", "gauge_livesum_11.db"]
    folder.remove()


def test_a_folder_that_cannot_be_made_again_is_said_once_and_tried_again(tmp_path, caplog) -> None:
    folder = RunFolder(tmp_path / "parent")
    shutil.rmtree(tmp_path / "parent")
    (tmp_path / "parent").write_text("a file where the folder was")
    assert folder.keep(set()) is False
    assert folder.keep(set()) is False
    assert len([r for r in caplog.records if "cannot be made again" in r.message]) == 1
    (tmp_path / "parent").unlink()
    assert folder.keep(set()) is True
    folder.remove()


def test_a_cleaner_that_takes_the_folder_again_while_it_is_being_made_again_is_outlasted(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path)
    for name in ("counter_11.db", "histogram_11.db"):
        (folder.metrics / name).write_bytes(b"\0" * 8)
    folder.keep(live_pids={11})
    shutil.rmtree(folder.path)
    real_symlink = os.symlink
    raced = []

    def symlink_after_the_cleaner_struck_again(target, path):
        if not raced:  # the cleaner's next pass, between the folder's re-creation and its first link
            raced.append(path)
            shutil.rmtree(folder.path)
        real_symlink(target, path)

    monkeypatch.setattr(os, "symlink", symlink_after_the_cleaner_struck_again)
    assert folder.keep(live_pids={11}) is False  # not an error that ends the run: tried again next turn
    assert raced and not folder.path.exists()
    assert folder.keep(live_pids={11}) is True
    assert sorted(p.name for p in folder.metrics.iterdir()) == ["counter_11.db", "histogram_11.db"]
    assert (folder.metrics / "counter_11.db").read_bytes() == b"\0" * 8
    folder.remove()


def test_a_new_run_removes_the_folders_of_runs_killed_whole_and_leaves_the_others(tmp_path):
    import subprocess
    import sys

    from pipeline.supervision.run_folder import OWNER_FILE

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / "actionpipe-killed"
    killed.mkdir()
    (killed / OWNER_FILE).write_text(f"{dead.pid} 12345")  # its supervisor is gone (or its pid reused)
    running = RunFolder(tmp_path)  # this process's own: alive
    unnamed = tmp_path / "actionpipe-older"  # an earlier version's, or another user's: no owner named
    unnamed.mkdir()
    again = RunFolder(tmp_path)
    assert not killed.exists()
    assert running.path.exists() and unnamed.exists() and again.path.exists()
    running.remove()
    again.remove()
