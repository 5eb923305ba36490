"""Every file we write goes through ``behavior_rag.atomic``: a reader sees the old content or the
new, never a half-written file; a failed write leaves the target as it was and no temp behind."""

from __future__ import annotations

import threading

import pytest

from behavior_rag.atomic import create_file_once, replace_dir, replace_file, writing_file


def test_replace_file_swaps_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.md"
    replace_file(target, "old")
    replace_file(target, b"new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "plot.png"
    replace_file(target, "old")
    with pytest.raises(RuntimeError), writing_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_replace_dir_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "adapter"
    with replace_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), replace_dir(target) as tmp:
        (tmp / "weights").write_text("v2 (partial)")
        assert (target / "weights").read_text() == "v1"  # still there while v2 is written
        raise RuntimeError("interrupted")
    assert (target / "weights").read_text() == "v1"
    with replace_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_concurrent_writers_never_share_a_temp_name(tmp_path):
    target = tmp_path / "fusion.json"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                replace_file(target, f"writer {i} " * 200)
        except BaseException as e:  # noqa: B036 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    words = set(target.read_text().split())
    assert len(words - {"writer"}) == 1  # one writer's whole content, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["fusion.json"]


def test_create_file_once_keeps_the_first_writers_content(tmp_path):
    key = tmp_path / "pseudonym.key"
    assert create_file_once(key, "first") is True
    assert create_file_once(key, "second") is False
    assert key.read_text() == "first" and key.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["pseudonym.key"]
