# ruff: noqa: E501  (the probe table keeps one probe per line)
"""The catalogue of bad inputs (issue #11): every probe and its exact outcome.

One probe is one line of :data:`PROBES`: a name, what to run (command-line arguments, or a
function of the :class:`Lab` for the Python API), the expected outcome and a pattern the
one line must match:

- ``REFUSED``: exit code 2 (API: a :class:`mindlens.MindlensError`) and exactly one line,
  ``error: ...``, no traceback; the model's fingerprint unchanged (API probes);
- ``WARNED``: exit code 0, a ``warning: ...`` line (API: a warning) matching the pattern;
- ``OK``: exit code 0 (API: the function returns ``True``, e.g. two twins read alike);
- ``INTERRUPTED``: exit code 130 and the line ``interrupted: ...``.

The probes run in-process through :func:`mindlens.cli.main` (usage errors included), on
real files made by :mod:`tests.probe_files`. The slow checks (peak memory of large files,
a whole ``evaluate`` run past an unreadable file) are in ``test_large_inputs.py``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import mindlens
from mindlens import cli, progress

from . import probe_files as pf
from .conftest import assert_untouched, fingerprint
from .tinynet import SOURCE, write_card

__all__ = ["Lab", "evaluate", "explain", "lines", "run_cli"]

REFUSED, WARNED, OK, INTERRUPTED = "refused", "warned", "ok", "interrupted"
CODES = {REFUSED: 2, WARNED: 0, OK: 0, INTERRUPTED: 130}


class Lab:
    """A folder for one probe, the good model card and image (made once per module, in
    ``shared``), and makers of bad ones."""

    def __init__(self, root: Path, shared: Path) -> None:
        self.root = root
        self.shared = shared
        self.card = str(shared / "card.json")
        self.img = str(shared / "good.png")
        self.out = str(root / "out")
        self._n = 0

    def _png(self, name: str, folder: Path | None = None) -> Path:
        arr = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
        path = (folder or self.root) / name
        Image.fromarray(arr).save(path)
        return path

    def folder(self) -> Path:
        self._n += 1
        path = self.root / f"case{self._n}"
        path.mkdir()
        return path

    def card_with(self, **fields: Any) -> str:
        """The good card with ``fields`` changed (``None`` removes one), in its own folder
        next to a copy of the factory and weights."""
        folder = self.folder()
        base = json.loads(Path(self.card).read_text())
        for name in ("tinynet_mod.py", "tiny.safetensors"):
            (folder / name).write_bytes((self.shared / name).read_bytes())
        base.update(fields)
        base = {k: v for k, v in base.items() if v is not None}
        path = folder / "card.json"
        path.write_text(json.dumps(base))
        return str(path)

    def raw_card(self, text: str) -> str:
        path = self.folder() / "card.json"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        return str(path)

    def factory(self, source: str, fn: str = "build", **fields: Any) -> str:
        """A card whose factory module ``mynet.py`` holds ``source``."""
        folder = self.folder()
        (folder / "mynet.py").write_text(source)
        card = {"factory": f"mynet:{fn}", "input_size": [16, 16], **fields}
        (folder / "card.json").write_text(json.dumps(card))
        return str(folder / "card.json")

    def file(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        return str(path)

    def nan_weights(self) -> str:
        folder = self.folder()
        (folder / "tinynet_mod.py").write_text(SOURCE)
        from safetensors.torch import load_file

        state = load_file(str(self.shared / "tiny.safetensors"))
        state["conv2.weight"][0, 0, 0, 0] = float("nan")
        save_file(state, str(folder / "tiny.safetensors"))
        card = json.loads(Path(self.card).read_text())
        (folder / "card.json").write_text(json.dumps(card))
        return str(folder / "card.json")

    def data(self, *bad: tuple[str, bytes], good: bool = True) -> str:
        """A folder of two good images (``good``) and the given bad files."""
        folder = self.folder()
        for name in ("a.png", "b.png") if good else ():
            self._png(name, folder)
        for name, data in bad:
            (folder / name).write_bytes(data)
        return str(folder)

    # -- the Python API side -----------------------------------------------------------
    def clf(self) -> mindlens.Classifier:
        if not hasattr(self, "_clf"):
            self._clf = mindlens.load_model(self.card)
        return self._clf

    def collect(self, *bad: tuple[str, bytes]) -> bool:
        """What ``evaluate --data`` reads of a folder of two good images and ``bad``."""
        from mindlens.evaluate import collect

        images, _ = collect(self.data(*bad))
        return [p.name for p in images] == ["a.png", "b.png"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("catalogue")
    write_card(folder)
    arr = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(arr).save(folder / "good.png")
    return folder


def explain(lab: Lab, *extra: str, card: str | None = None, image: str | None = None,
            methods: str = "saliency", out: str | None = None) -> list[str]:
    """``mindlens explain`` of one image with the good card, writing to the lab's out."""
    return ["explain", image or lab.img, "--model", card or lab.card, "--out", out or lab.out,
            "--methods", methods, *extra]


def evaluate(lab: Lab, data: str, *extra: str) -> list[str]:
    return ["evaluate", "--model", lab.card, "--data", data, "--out", lab.out, "--methods",
            "saliency", "--steps", "2", *extra]


PNG = b"\x89PNG\r\n\x1a\n"
RAISES = "def build():\n    raise RuntimeError('my own message: no GPU here')\n"
EXITS = "import sys\ndef build():\n    sys.exit(3)\n"
SYNTAX = "def build(:\n    pass\n"
IMPORT_FAILS = "raise ValueError('broken at import')\n"
NOT_MODULE = "def build():\n    return 42\n"
NAN_LOGITS = ("import torch\nfrom torch import nn\nclass N(nn.Module):\n"
              "    def forward(self, x):\n        return torch.full((x.shape[0], 3), float('nan'))\n"
              "def build():\n    return N()\n")


def twins_equal(lab: Lab, make: Callable[[Path], tuple[Path, Path]]) -> bool:
    a, b = make(lab.folder())
    clf = lab.clf()
    return torch.equal(clf.preprocess(str(a)), clf.preprocess(str(b)))


def float_255(lab: Lab) -> bool:
    """A float image holding 0..255 whole numbers reads like the same uint8 image."""
    arr = np.random.default_rng(1).integers(0, 256, (20, 24, 3)).astype(np.uint8)
    clf = lab.clf()
    return torch.equal(clf.preprocess(arr.astype(np.float32)), clf.preprocess(arr))


def two_cards_same_module_name(lab: Lab) -> bool:
    """Two cards with a mynet.py each build their own networks (3 and 5 classes)."""
    net = ("from torch import nn\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), "
           "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, {}))\n")
    a = mindlens.load_model(lab.factory(net.format(3)))
    b = mindlens.load_model(lab.factory(net.format(5)))
    x = torch.zeros(1, 3, 16, 16)
    return a(x).shape[1] == 3 and b(x).shape[1] == 5


def outside_allowed(lab: Lab, trusted: bool) -> bool:
    (lab.root / "outside_labels.txt").write_text("cat\ndog\nbird\n")
    card = lab.card_with(labels="../outside_labels.txt",
                         **({} if trusted else {"allow_outside": True}))
    return mindlens.load_model(card, trust=trusted or None).labels == ["cat", "dog", "bird"]


def interrupt(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ctrl-C in the middle of explaining (the second method)."""
    real = mindlens.methods.get("gradcam").run

    def run(self: Any, *args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(mindlens.methods.get("gradcam"), "run", run)
    assert real is not run
    return explain(lab, methods="saliency,gradcam")


def unwritable(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An output folder the user may not write to (simulated: the tests run as root)."""
    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return explain(lab)


def long_occlusion(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An occlusion run over the warning threshold (lowered, so the probe stays quick)."""
    monkeypatch.setattr(progress, "WARN_SECONDS", 0.0)
    monkeypatch.setattr(progress, "MIN_PASSES", 1)
    return explain(lab, "--window", "2", "--stride", "1", methods="occlusion")


@dataclass(frozen=True)
class Probe:
    name: str
    run: Callable[..., Any]  # Lab -> CLI arguments, or Lab -> result (api=True)
    outcome: str
    pattern: str = ""
    api: bool = False
    patch: bool = False  # run takes (lab, monkeypatch)


P = Probe
PROBES = [
    # -- model cards: shape of the card ------------------------------------------------
    P("card: a JSON list", lambda L: explain(L, card=L.raw_card("[1, 2]")), REFUSED, "must be a JSON object"),
    P("card: not JSON", lambda L: explain(L, card=L.raw_card("{nope")), REFUSED, "not valid JSON"),
    P("card: not UTF-8", lambda L: explain(L, card=L.raw_card("\udcff")), REFUSED, "not valid JSON"),
    P("card: a folder", lambda L: explain(L, card=str(L.folder())), REFUSED, "is a folder"),
    P("card: missing", lambda L: explain(L, card=str(L.root / "no.json")), REFUSED, "card not found"),
    P("card: no input_size", lambda L: explain(L, card=L.card_with(input_size=None)), REFUSED, "lacks input_size"),
    P("card: input_size a string", lambda L: explain(L, card=L.card_with(input_size="224")), REFUSED, "'input_size' must be"),
    P("card: input_size one value", lambda L: explain(L, card=L.card_with(input_size=[16])), REFUSED, "'input_size' must be"),
    P("card: input_size zero", lambda L: explain(L, card=L.card_with(input_size=[0, 16])), REFUSED, "'input_size' must be"),
    P("card: input_size float", lambda L: explain(L, card=L.card_with(input_size=[16.5, 16])), REFUSED, "'input_size' must be"),
    P("card: channels a string", lambda L: explain(L, card=L.card_with(channels="3")), REFUSED, "'channels' must be a positive integer"),
    P("card: channels zero", lambda L: explain(L, card=L.card_with(channels=0)), REFUSED, "'channels' must be a positive integer"),
    P("card: mean a string", lambda L: explain(L, card=L.card_with(mean="0.5")), REFUSED, "'mean' must be a number or a list"),
    P("card: mean two of three", lambda L: explain(L, card=L.card_with(mean=[0.5, 0.5])), REFUSED, "'mean' must be 1 or 3 values"),
    P("card: std zero", lambda L: explain(L, card=L.card_with(std=[0.0, 1.0, 1.0])), REFUSED, "'std' must be positive"),
    P("card: std NaN", lambda L: explain(L, card=L.raw_card(Path(L.card_with()).read_text()[:-1] + ', "std": NaN}')), REFUSED, "'std' must be a number"),
    P("card: logit_offset -1", lambda L: explain(L, card=L.card_with(logit_offset=-1)), REFUSED, "'logit_offset' must be an integer >= 0"),
    P("card: logit_offset a string", lambda L: explain(L, card=L.card_with(logit_offset="1")), REFUSED, "'logit_offset' must be an integer"),
    P("card: logit_offset leaves 1 class", lambda L: explain(L, card=L.card_with(logit_offset=2, labels=None)), REFUSED, "leaves 1 of the model's 3 logits"),
    P("card: weights a number", lambda L: explain(L, card=L.card_with(weights=5)), REFUSED, "'weights' must be a non-empty string"),
    P("card: weights missing file", lambda L: explain(L, card=L.card_with(weights="no.safetensors")), REFUSED, "weights file not found"),
    P("card: weights corrupt", lambda L: explain(L, card=L.card_with(weights="card.json")), REFUSED, "cannot read weights file"),
    P("card: labels a number", lambda L: explain(L, card=L.card_with(labels=7)), REFUSED, "'labels' must be a file name or a list"),
    P("card: one label", lambda L: explain(L, card=L.card_with(labels=["one"])), REFUSED, "'labels' must be at least two"),
    P("card: labels not UTF-8", lambda L: explain(L, card=L.card_with(labels="tiny.safetensors")), REFUSED, "not UTF-8 text"),
    P("card: factory a number", lambda L: explain(L, card=L.card_with(factory=42)), REFUSED, "'factory' must be a non-empty string"),
    P("card: factory without colon", lambda L: explain(L, card=L.card_with(factory="tinynet_mod")), REFUSED, "package.module:function"),
    P("card: factory module missing", lambda L: explain(L, card=L.card_with(factory="no_such_mod_x:build")), REFUSED, "cannot import 'no_such_mod_x'"),
    P("card: factory_kwargs a list", lambda L: explain(L, card=L.card_with(factory_kwargs=[1])), REFUSED, "'factory_kwargs' must be an object"),
    P("card: outputs unknown", lambda L: explain(L, card=L.card_with(outputs="softmax")), REFUSED, "'outputs' must be"),
    P("card: allow_outside a string", lambda L: explain(L, card=L.card_with(allow_outside="yes")), REFUSED, "'allow_outside' must be true or false"),
    P("card: NaN weights", lambda L: explain(L, card=L.nan_weights()), REFUSED, "'conv2.weight' of tiny.safetensors holds 1 NaN"),
    # -- model cards: the factory's own failures, in its own words --------------------
    P("factory raises", lambda L: explain(L, card=L.factory(RAISES)), REFUSED, "mynet:build failed: RuntimeError: my own message: no GPU here"),
    P("factory calls sys.exit", lambda L: explain(L, card=L.factory(EXITS)), REFUSED, r"mynet:build failed: SystemExit\(3\)"),
    P("factory syntax error", lambda L: explain(L, card=L.factory(SYNTAX)), REFUSED, "'mynet' failed to import: SyntaxError"),
    P("factory fails at import", lambda L: explain(L, card=L.factory(IMPORT_FAILS)), REFUSED, "failed to import: ValueError: broken at import"),
    P("factory returns no module", lambda L: explain(L, card=L.factory(NOT_MODULE)), REFUSED, "returned int, not a torch.nn.Module"),
    P("factory name not in module", lambda L: explain(L, card=L.factory(NOT_MODULE, fn="nope")), REFUSED, "has no 'nope'"),
    P("model gives NaN logits", lambda L: explain(L, card=L.factory(NAN_LOGITS)), REFUSED, "NaN or infinite logits"),
    P("two cards, same module name", two_cards_same_module_name, OK, api=True),
    # -- model cards: paths stay in the card's folder ----------------------------------
    P("path: weights ../..", lambda L: explain(L, card=L.card_with(weights="../../../etc/passwd")), REFUSED, "weights '../../../etc/passwd' is outside the card's folder.*--trust-card"),
    P("path: labels absolute", lambda L: explain(L, card=L.card_with(labels="/etc/passwd")), REFUSED, "labels '/etc/passwd' is outside.*allow_outside"),
    P("path: onnx ..", lambda L: explain(L, card=L.card_with(onnx="../m.onnx")), REFUSED, "onnx '../m.onnx' is outside"),
    P("path: torchscript ..", lambda L: explain(L, card=L.card_with(torchscript="../../m.pt")), REFUSED, "torchscript '../../m.pt' is outside"),
    P("path: allow_outside in the card", lambda L: outside_allowed(L, trusted=False), OK, api=True),
    P("path: trust=True (--trust-card)", lambda L: outside_allowed(L, trusted=True), OK, api=True),
    P("path: --trust-card on the CLI", lambda L: [*explain(L, "--trust-card", card=L.card_with(labels="/etc/hostname"))], REFUSED, "3 classes .* but [0-9]+ labels"),
    # -- image files ---------------------------------------------------------------------
    P("image: missing", lambda L: explain(L, image=str(L.root / "no.png")), REFUSED, "image file not found"),
    P("image: empty", lambda L: explain(L, image=L.file("empty.png", b"")), REFUSED, r"empty \(0 bytes\)"),
    P("image: not an image", lambda L: explain(L, image=L.file("text.png", b"hello")), REFUSED, "not an image format"),
    P("image: truncated PNG", lambda L: explain(L, image=L.file("cut.png", Path(L.img).read_bytes()[:80])), REFUSED, "corrupt or truncated"),
    P("image: a folder", lambda L: explain(L, image=str(L.folder())), REFUSED, "no images .* in the folder"),
    P("bomb: header claims 100000x100000", lambda L: explain(L, image=str(pf.bomb_header(L.root / "bomb.png"))), REFUSED, "claims 10,000,000,000 pixels, over the limit of 50,000,000"),
    P("bomb: real 30000x30000 PNG", lambda L: explain(L, image=str(pf.write_png(L.root / "b30k.png", 30000, 30000, 0, 1))), REFUSED, "claims 900,000,000 pixels"),
    P("bomb: 4000x4000 over --max-pixels", lambda L: explain(L, "--max-pixels", "1000000", image=str(pf.write_png(L.root / "b4k.png", 4000, 4000, 0))), REFUSED, "16,000,000 pixels, over the limit of 1,000,000"),
    P("image: animated GIF", lambda L: explain(L, image=str(pf.animated_gif(L.root / "anim.gif"))), WARNED, "has 3 frames .* uses frame 1"),
    P("image: multi-page TIFF", lambda L: explain(L, image=str(pf.multipage_tiff(L.root / "pages.tif"))), WARNED, "has 2 frames .* uses frame 1"),
    P("image: palette+tRNS = RGBA", lambda L: twins_equal(L, pf.palette_twins), OK, api=True),
    P("image: LA = RGBA", lambda L: twins_equal(L, pf.la_twins), OK, api=True),
    P("image: non-UTF-8 file name", lambda L: explain(L, image=L.file(os.fsdecode(b"n\xe9e\xff.png"), Path(L.img).read_bytes())), OK),
    P("image: one bad of three", lambda L: ["explain", L.img, L.file("bad.png", b"junk"), L.img, "--model", L.card, "--out", L.out, "--methods", "saliency"], WARNED, "skipped .*bad.png: cannot read"),
    # -- arrays and targets through the API --------------------------------------------
    P("array: float 0..255 whole numbers", float_255, OK, api=True),
    P("array: float 0..255 warns", lambda L: L.clf().preprocess(np.full((8, 8, 3), 200.0)), WARNED, "whole-number values 0..200: read as 8-bit", api=True),
    P("array: float 0..1000", lambda L: L.clf().preprocess(np.full((8, 8, 3), 999.5)), REFUSED, r"values in \[999.5, 999.5\].*Scale it first", api=True),
    P("array: NaN pixel", lambda L: L.clf().preprocess(np.full((8, 8, 3), np.nan)), REFUSED, "192 NaN or infinite pixel", api=True),
    P("tensor: Inf in model space", lambda L: mindlens.explain(L.clf(), torch.full((1, 3, 16, 16), float("inf"))), REFUSED, "NaN or infinite", api=True),
    P("target 1.5", lambda L: mindlens.explain(L.clf(), L.img, "saliency", target=1.5), REFUSED, "whole class indices, got 1.5", api=True),
    P("target [0, 2.5]", lambda L: mindlens.explain(L.clf(), [L.img, L.img], "saliency", target=[0, 2.5]), REFUSED, "whole class indices", api=True),
    P("target True", lambda L: mindlens.explain(L.clf(), L.img, "saliency", target=True), REFUSED, "class index \\(an integer\\)", api=True),
    P("target 99", lambda L: mindlens.explain(L.clf(), L.img, "gradcam", target=99), REFUSED, "out of range: the model has classes 0..2", api=True),
    P("target -1", lambda L: mindlens.explain(L.clf(), L.img, "occlusion", target=-1), REFUSED, "out of range", api=True),
    P("--target 1.5", lambda L: explain(L, "--target", "1.5"), REFUSED, "a fractional class is not a class"),
    P("max_batch 0", lambda L: mindlens.explain(L.clf(), L.img, "saliency", max_batch=0), REFUSED, "max_batch must be a positive integer", api=True),
    # -- folders (evaluate --data) -------------------------------------------------------
    P("data: one unreadable file", lambda L: L.collect(("c.png", b"junk")), WARNED, r"skipped .*c.png: cannot read", api=True),
    P("data: one truncated file", lambda L: L.collect(("c.png", PNG + b"\0\0\0\rIHDR")), WARNED, r"skipped .*c.png: cannot read", api=True),
    P("data: one empty file", lambda L: L.collect(("c.png", b"")), WARNED, r"skipped .*c.png: image file is empty", api=True),
    P("data: one bomb", lambda L: L.collect(("c.png", pf.bomb_header(L.root / "x.png").read_bytes())), WARNED, r"skipped .*c.png: .*claims 10,000,000,000", api=True),
    P("data: no images", lambda L: evaluate(L, str(L.folder())), REFUSED, "no images"),
    P("data: nothing readable", lambda L: evaluate(L, L.data(("c.png", b"junk"), good=False)), REFUSED, "none of the 1 images in .* can be read"),
    P("data: a file", lambda L: evaluate(L, L.img), REFUSED, "is not a folder of images"),
    P("masks: corrupt mask", lambda L: evaluate(L, L.data(), "--masks", str(Path(L.file("a.png", b"junk")).parent)), REFUSED, "cannot read the mask .*a.png"),
    # -- the command line ----------------------------------------------------------------
    P("--out is a file", lambda L: explain(L, out=L.img), REFUSED, "--out.*is a file; --out names a folder"),
    P("--out below a file", lambda L: explain(L, out=L.img + "/sub"), REFUSED, "Not a directory.*a part of the path is a file"),
    P("--out not writable", unwritable, REFUSED, "Permission denied.*choose a folder you can write to", patch=True),
    P("--max-pixels 0", lambda L: explain(L, "--max-pixels", "0"), REFUSED, "Invalid value for '--max-pixels'"),
    P("--window 0", lambda L: explain(L, "--window", "0", methods="occlusion"), REFUSED, "Invalid value for '--window'"),
    P("--top-k not a number", lambda L: explain(L, "--top-k", "x"), REFUSED, "Invalid value for '--top-k'"),
    P("--occlusion-mode unknown", lambda L: explain(L, "--occlusion-mode", "fast", methods="occlusion"), REFUSED, "--occlusion-mode must be one of"),
    P("unknown method", lambda L: explain(L, methods="nosuch"), REFUSED, "unknown method 'nosuch'"),
    P("unknown command", lambda L: ["nosuch"], REFUSED, "No such command"),
    P("missing --model", lambda L: ["explain", L.img], REFUSED, "Missing option '--model'"),
    P("long occlusion warns", long_occlusion, WARNED, "occlusion will run about .* model passes.*faster: mode='incremental'", patch=True),
    P("Ctrl-C while explaining", interrupt, INTERRUPTED, "interrupted: ", patch=True),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe: Probe, tmp_path: Path, shared: Path, capsys: pytest.CaptureFixture[str],
               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mindlens.model_card, "TRUST_CARDS", False)
    monkeypatch.setattr(mindlens.io, "MAX_PIXELS", mindlens.io.DEFAULT_MAX_PIXELS)
    lab = Lab(tmp_path, shared)
    args = (lab, monkeypatch) if probe.patch else (lab,)
    if probe.api:
        run_api(probe, lab, args)
        return
    code, out, err = run_cli(probe.run(*args), capsys)
    assert "Traceback" not in out + err
    assert code == CODES[probe.outcome], (code, out, err)
    said = lines(err)
    if probe.outcome == REFUSED:
        assert len(said) == 1 and said[0].startswith("error: "), err
        assert re.search(probe.pattern, said[0]), said[0]
    elif probe.outcome == WARNED:
        assert any(line.startswith("warning: ") and re.search(probe.pattern, line)
                   for line in said), err
    elif probe.outcome == INTERRUPTED:
        assert len(said) == 1 and said[0].startswith("interrupted: "), err
        assert "kept" in said[0] or "nothing was written" in said[0]
    else:
        assert not [line for line in said if line.startswith(("error", "warning"))], err


def run_api(probe: Probe, lab: Lab, args: tuple[Any, ...]) -> None:
    clf = lab.clf()
    before = fingerprint(clf.module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if probe.outcome == REFUSED:
            with pytest.raises(mindlens.MindlensError) as info:
                probe.run(*args)
            message = str(info.value)
            assert "\n" not in message and re.search(probe.pattern, message), message
        else:
            result = probe.run(*args)
            if probe.outcome == OK:
                assert result is True
    if probe.outcome == WARNED:
        assert any(re.search(probe.pattern, str(w.message)) for w in caught), \
            [str(w.message) for w in caught]
    assert_untouched(before, clf.module)


def test_catalogue_counts() -> None:
    """Every probe has an outcome; the closing note of issue #11 quotes these counts."""
    counts = Counter(p.outcome for p in PROBES)
    assert sum(counts.values()) == len(PROBES) >= 80
    assert set(counts) == {REFUSED, WARNED, OK, INTERRUPTED}
    assert len({p.name for p in PROBES}) == len(PROBES)
