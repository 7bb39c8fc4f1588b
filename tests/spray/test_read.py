"""``read_audit``: a written audit read back equals the audit that wrote it (rows, mean
maps, typical maps), finds its store when the folder moves along, and refuses in words when
the store changed or is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mindlens.errors import InputError
from mindlens.spray import read_audit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tiny_audit: tuple[Path, Path, dict]) -> tuple[Path, Path, dict]:
    return tiny_audit


def test_read_back_equals_the_audit(tiny) -> None:
    _, folder, result = tiny
    back = read_audit(folder)
    assert back["method"] == result["method"] and back["classes"].keys() == result["classes"].keys()
    for cls, c in result["classes"].items():
        b = back["classes"][cls]
        assert b["rows"] == c["rows"] and b["labels"] == c["labels"]
        assert b["embedding_2d"] == c["embedding_2d"] and b["flags"] == c["flags"]
        np.testing.assert_array_equal(b["mean_map"], c["mean_map"])
        for bc, cc in zip(b["clusters"], c["clusters"], strict=True):
            np.testing.assert_array_equal(bc["mean_map"], cc["mean_map"])
            np.testing.assert_array_equal(bc["typical_maps"], cc["typical_maps"])
            assert bc["typical"] == cc["typical"] and bc["members"] == cc["members"]


def test_moved_audit_finds_its_store_or_says_so(tiny, tmp_path: Path) -> None:
    store, folder, _ = tiny
    moved = tmp_path / "moved"
    shutil.copytree(store, moved)
    inside = moved / "audit"  # an audit folder inside its store, recorded elsewhere
    shutil.copytree(folder, inside)
    data = json.loads((inside / "audit.json").read_text())
    data["store"] = "/nowhere/store"
    (inside / "audit.json").write_text(json.dumps(data))
    assert read_audit(inside)["store"] == str(moved)
    lost = tmp_path / "lost"
    shutil.copytree(folder, lost)
    (lost / "audit.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="not there any more"):
        read_audit(lost)
    with pytest.raises(InputError, match=r"holds no audit\.json"):
        read_audit(tmp_path)


def test_changed_store_is_refused(tiny, tmp_path: Path) -> None:
    _, folder, _ = tiny
    data = json.loads((folder / "audit.json").read_text())
    cls = next(iter(data["classes"]))
    data["classes"][cls]["clusters"][0]["members"][0]["id"] = "someone/else.png"
    (tmp_path / "audit.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="changed since the audit"):
        read_audit(tmp_path)
