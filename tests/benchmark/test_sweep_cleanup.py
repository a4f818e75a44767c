"""Issue 27 item 3: at start the sweep removes only what its own writers left."""

import os
import subprocess

from detbench.benchmark.results import TEMP_PREFIX, atomic_write, remove_partial_writes


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x")
    return str(path)


def test_only_our_dead_writers_temporary_files_and_export_staging_are_removed(tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    ours = [
        _touch(out / f"{TEMP_PREFIX}{dead}-abcresults.jsonl"),
        _touch(out / "plots" / f"{TEMP_PREFIX}{dead}-xyzlatency.png"),
        _touch(out / "models" / "k1" / f"{TEMP_PREFIX}{dead}-qTRAINED.json"),
    ]
    staging = out / "exports" / "cell1" / ".export-k2j3"
    _touch(staging / "saved_model" / "saved_model.pb")
    kept = [
        _touch(out / ".tmp-mine.txt"),  # a user's file with a similar name
        _touch(out / f"{TEMP_PREFIX}{os.getpid()}-live.csv"),  # a live writer's
        _touch(out / "nested" / f"{TEMP_PREFIX}{dead}-rows.jsonl"),  # another sweep's folder
        _touch(out / "plots" / "sub" / f"{TEMP_PREFIX}{dead}-deep.png"),  # not recursed into
        _touch(out / "exports" / "cell1" / "saved_model" / "saved_model.pb"),
    ]
    removed = remove_partial_writes(str(out))
    assert sorted(removed) == sorted(ours + [str(staging)])
    assert not any(os.path.exists(p) for p in ours) and not staging.exists()
    assert all(os.path.exists(p) for p in kept)


def test_atomic_write_names_its_temporary_file_with_the_writer(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write(str(tmp_path / "a.txt"), "hello")
    assert seen[0].startswith(f"{TEMP_PREFIX}{os.getpid()}-")
    assert (tmp_path / "a.txt").read_text() == "hello"
