import errno
import json
import os
import signal

import pytest

from common import files
from common.files import WriteError, atomic_write, atomic_write_all, replace_refusal, save_json


def writing(content):
    return lambda file: file.write(content)


@pytest.fixture
def old_pair(tmp_path):
    """net.pt and net.npz with old contents, as a previous run left them."""
    pair = {tmp_path / "net.pt": b"old pt", tmp_path / "net.npz": b"old npz"}
    for path, content in pair.items():
        path.write_bytes(content)
    return pair


def assert_untouched(folder, pair):
    assert {path: path.read_bytes() for path in pair} == pair
    assert sorted(folder.iterdir()) == sorted(pair)  # no temporary file left behind


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.json"
    save_json(target, {"good": 1})

    def broken(file):
        file.write(b"{half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    save_json(tmp_path / "a.json", {})
    (tmp_path / "b.json").write_text("{}")  # what a plain open() makes
    assert (tmp_path / "a.json").stat().st_mode == (tmp_path / "b.json").stat().st_mode


def test_a_full_disk_on_the_second_file_leaves_both_old_files_whole(tmp_path, old_pair):
    pt, npz = old_pair

    def disk_full(file):
        file.write(b"half an npz")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as caught:
        atomic_write_all({pt: writing(b"new pt"), npz: disk_full})
    assert str(caught.value) == f"could not write {npz}: No space left on device"
    assert caught.value.__cause__.errno == errno.ENOSPC
    assert_untouched(tmp_path, old_pair)


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_an_interrupt_during_the_renames_waits_until_both_are_in_place(
    tmp_path, old_pair, monkeypatch, signum, raised
):
    def terminate(signum, frame):
        raise SystemExit(143)  # what a program that cleans up on SIGTERM does

    # Python's own handlers, whatever the shell that started the tests left (a background job ignores SIGINT)
    previous = (
        signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.signal(signal.SIGTERM, terminate),
    )
    renamed = []
    original_replace = os.replace

    def replace_then_interrupt(source, target):
        original_replace(source, target)
        renamed.append(target)
        if len(renamed) == 1:
            signal.raise_signal(signum)  # arrives between the two renames

    monkeypatch.setattr(files.os, "replace", replace_then_interrupt)
    try:
        with pytest.raises(raised):
            atomic_write_all({path: writing(b"new") for path in old_pair})
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers are back
        assert signal.getsignal(signal.SIGTERM) is terminate
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    assert renamed == list(old_pair)
    assert_untouched(tmp_path, dict.fromkeys(old_pair, b"new"))


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    private = tmp_path / "private.json"
    private.write_text("{}")
    private.chmod(0o600)
    save_json(private, {"new": 1})
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert json.loads(private.read_text()) == {"new": 1}


def test_a_read_only_target_is_refused_before_anything_is_written(tmp_path, old_pair):
    pt, npz = old_pair
    npz.chmod(0o444)
    called = []
    with pytest.raises(WriteError) as caught:
        atomic_write_all({pt: lambda file: called.append(pt), npz: lambda file: called.append(npz)})
    assert str(caught.value) == f"{npz} is read-only"
    assert called == []
    assert_untouched(tmp_path, old_pair)


def test_a_folder_target_is_refused(tmp_path):
    (tmp_path / "net.pt").mkdir()
    with pytest.raises(WriteError, match=f"^{tmp_path / 'net.pt'} is a folder$"):
        atomic_write(tmp_path / "net.pt", writing(b"x"))
    assert replace_refusal(tmp_path / "new.pt") is None
    assert replace_refusal(tmp_path / "net.pt" / "inside.pt") is None  # a new file inside it is fine
    assert replace_refusal(tmp_path / "file" / "inside.pt") is None
    (tmp_path / "file").write_text("")
    assert replace_refusal(tmp_path / "file" / "inside.pt") == f"{tmp_path / 'file'} is not a folder"
