"""The slow part of the catalogue of bad inputs (issue #11): peak memory of real large
and bomb image files, measured in a fresh process, and a whole ``mindlens evaluate`` run
over a folder with an unreadable file and a non-UTF-8 file name."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mindlens
from mindlens.io import IMAGE_SUFFIXES

from . import probe_files as pf
from .test_catalogue import Lab, evaluate, lines, run_cli, shared  # noqa: F401 (fixture)

PEAK = """
import resource, sys
import torch
from torch import nn
import mindlens
net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
clf = mindlens.Classifier(net.eval(), input_size=(224, 224))
for arg in sys.argv[1:]:
    path, _, limit = arg.partition("@")
    try:
        x = clf.preprocess(path, max_pixels=int(limit) if limit else None)
        print("read", path, tuple(x.shape))
    except mindlens.MindlensError as err:
        print("refused", path, str(err).splitlines()[0][:60])
# VmHWM: this process image's own peak (ru_maxrss would carry over the peak of the parent
# that forked it, e.g. a pytest process after a long suite)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print("peak_mb", int(hwm[0].split()[1]) // 1024 if hwm else
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_large_files_cost_bounded_memory(tmp_path: Path) -> None:
    """Real files: bombs refused from the header, a 36 MP JPEG and a 49 MP RGBA PNG read
    within the default limit and a 144 MP PNG over it (allowed with max_pixels) shrunk
    while read; the whole process (torch included) peaks under 1 GB."""
    files = [
        f"{pf.bomb_header(tmp_path / 'bomb.png')}",
        f"{pf.write_png(tmp_path / 'b30k.png', 30000, 30000, 0, 1)}",
        f"{pf.write_png(tmp_path / 'g12k.png', 12000, 12000, 0)}",
        f"{pf.big_jpeg(tmp_path / 'big.jpg')}",
        f"{pf.write_png(tmp_path / 'rgba7k.png', 7000, 7000, 6)}",
        f"{tmp_path / 'g12k.png'}@200000000",
    ]
    # a clean environment: no allocator settings another test may have left (a glibc
    # told to keep freed memory would add up the files' peaks)
    env = {"PATH": os.environ.get("PATH", ""),
           "PYTHONPATH": str(Path(mindlens.__file__).parents[1])}
    # the files within the default limit in one process, the file read past the limit
    # (max_pixels raised by the caller) in its own: each peak is one file's, not a sum
    said, peaks = [], []
    for group in (files[:5], files[5:]):
        run = subprocess.run([sys.executable, "-c", PEAK, *group], capture_output=True,
                             text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        out = run.stdout.splitlines()
        said += out[:-1]
        peaks.append(int(out[-1].split()[1]))
    assert [line.split()[0] for line in said] == ["refused", "refused", "refused", "read",
                                                  "read", "read"], said
    assert all("(1, 3, 224, 224)" in line for line in said[3:6]), said
    assert max(peaks) < 1024, f"peaks {peaks} MB"


def test_evaluate_skips_an_unreadable_file_and_escapes_names(
        tmp_path: Path, shared: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    lab = Lab(tmp_path, shared)
    odd = os.fsdecode(b"\xff\xfe.png")
    data = lab.data(("c.png", b"junk"), (odd, Path(lab.img).read_bytes()))
    code, out, err = run_cli(evaluate(lab, data), capsys)
    assert code == 0 and "Traceback" not in out + err, err
    assert [line for line in lines(err) if line.startswith("warning:")] == [
        f"warning: skipped {data}/c.png: cannot read {data}/c.png: not an image format "
        f"mindlens knows (use one of {', '.join(IMAGE_SUFFIXES)})"]
    with open(Path(lab.out) / "results.csv", newline="", encoding="utf-8") as fh:
        ids = sorted(row["image"] for row in csv.DictReader(fh))
    assert ids == ["\\xff\\xfe.png", "a.png", "b.png"]
