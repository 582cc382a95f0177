"""Output files are written whole or not at all, with ordinary permissions."""

import os
import stat

import pytest

from labeling.core.errors import InputError
from labeling.core.files import atomic_path, write_text_atomically


def test_written_file_has_umask_permissions_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "out.csv", "a,b\n")
    finally:
        os.umask(old)
    assert (tmp_path / "out.csv").read_text() == "a,b\n"
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o644


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_text_atomically(tmp_path / "no" / "out.txt", "x")


def test_file_sha256_is_the_digest_of_the_bytes(tmp_path):
    import hashlib

    data = bytes(range(256)) * 9000  # more than one read block
    (tmp_path / "f.bin").write_bytes(data)
    from labeling.core.files import file_sha256

    assert file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path / "f.bin") != hashlib.sha256(data[:-1]).hexdigest()
