"""The ``mindlens`` command line.

Every failure ends with exit code 2 and one line saying what was wrong, never a traceback
(:func:`friendly` for the commands' own errors, :func:`main` for usage errors); Ctrl-C
ends with exit code 130 and a line saying what was kept. Warnings (a frame picked, a file
skipped, a long run ahead) are one line each; long perturbation runs show a progress bar.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from . import methods, progress
from .cases import DEFAULT_METHODS as CASE_METHODS
from .errors import InputError, MindlensError
from .io import DEFAULT_MAX_PIXELS, set_max_pixels
from .methods.perturbation.occlusion import MODES as OCCLUSION_MODES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Read the mind of a CNN image classifier.")
err = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"mindlens {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")
        ] = False) -> None:
    """Read the mind of a CNN image classifier."""

DEFAULT_METHODS = ",".join(CASE_METHODS)


def printable(text: object) -> str:
    """One line, any bytes: undecodable file-name bytes as ``\\xNN``, newlines folded."""
    raw = str(text).encode("utf-8", "surrogateescape")
    return " ".join(raw.decode("utf-8", "backslashreplace").split())


def fail(message: object, code: int = 2) -> typer.Exit:
    """Print ``error: message`` (one line) and return the exit to raise."""
    # escaped: a message may hold brackets ("pip install 'mindlens[store]'") that are no markup
    err.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False,
              soft_wrap=True, markup=True)
    return typer.Exit(code)


def os_error(e: OSError) -> str:
    """An OS error as one line that names the file and the likely fix."""
    name = printable(e.filename) if e.filename is not None else ""
    what = e.strerror or str(e)
    hint = {
        FileExistsError: "a file of that name is in the way; give a folder path (or remove "
                         "the file)",
        NotADirectoryError: "a part of the path is a file, not a folder; give a folder path",
        PermissionError: "choose a folder you can write to (or fix its permissions)",
        IsADirectoryError: "give a file, not a folder",
        FileNotFoundError: "check the path",
    }.get(type(e), "")
    if e.errno == 28:  # ENOSPC
        hint = "free some space or write elsewhere (--out)"
    return f"{what}: {name}" + (f" ({hint})" if hint else "")


def kept(out_dir: Path | None) -> str:
    """What an interrupted command leaves behind, in words."""
    if out_dir is None:
        return "files already saved are kept"
    if not Path(out_dir).is_dir():
        return "nothing was written"
    files = sorted(p for p in Path(out_dir).iterdir() if p.is_file())
    if not files:
        return f"nothing was written to {printable(out_dir)}"
    text = f"kept {len(files)} file(s) in {printable(out_dir)}"
    rows = Path(out_dir) / "results.jsonl"
    if rows.is_file():
        with rows.open("rb") as fh:
            done = sum(1 for line in fh if line.strip())
        text += f" ({done} finished rows in {rows.name}; the same command resumes)"
    return text


def _warning_line(message: Warning | str, category: type[Warning], *_: Any,
                  **__: Any) -> None:
    err.print(f"[yellow]warning:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


class _Bar:
    """The progress reporter of :mod:`mindlens.progress`: a rich bar per method, opened on
    the first report."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = Progress(console=err, transient=True)
            self.bar.start()
        if label not in self.tasks:
            self.tasks[label] = self.bar.add_task(f"{label} (model passes)", total=total)
        self.bar.update(self.tasks[label], completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command so that every failure is one line on stderr and exit code 2 (the
    command's own errors, OS errors, a model's ``sys.exit``, anything unexpected: set
    ``MINDLENS_DEBUG=1`` for its traceback), Ctrl-C is exit code 130 with what was kept,
    warnings are one line each and long perturbation runs show a progress bar."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bar = _Bar()
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            warnings.showwarning = _warning_line
            try:
                with progress.reporting(bar):
                    return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise
            except KeyboardInterrupt:
                bar.close()
                err.print(f"interrupted: {kept(kwargs.get('out_dir'))}", highlight=False,
                          soft_wrap=True)
                raise typer.Exit(130) from None
            except MindlensError as e:
                raise fail(e) from None
            except OSError as e:
                raise fail(os_error(e)) from None
            except SystemExit as e:
                raise fail(f"the model's code called sys.exit({e.code!r}); mindlens stopped "
                           f"there") from None
            except Exception as e:  # a bug or an unforeseen input: still one line
                if os.environ.get("MINDLENS_DEBUG"):
                    raise
                raise fail(f"unexpected {type(e).__name__}: {e} (set MINDLENS_DEBUG=1 for "
                           f"the traceback, and please report it)") from None
            finally:
                bar.close()

    return wrapper


def _max_pixels(value: int | None) -> int | None:
    if value is not None:
        if value < 1:
            raise typer.BadParameter("must be a positive number of pixels")
        set_max_pixels(value)
    return value


def _readable_images(paths: list[Path]) -> list[Path]:
    """Of several image files, skip those that cannot be read, each with a warning line (a
    single file is left to fail with its own error)."""
    from .io import is_volume_path, readable

    if len(paths) < 2:
        return paths
    volumes = [p for p in paths if is_volume_path(p)]
    files = [p for p in paths if not is_volume_path(p)]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _warning_line
        try:
            images = readable(files, what="image files") if files else []
        except InputError as e:
            raise typer.BadParameter(str(e)) from None
    return [p for p in paths if p in volumes or p in images]


def _trust(value: bool) -> bool:
    if value:
        from .model_card import trust_cards

        trust_cards(True)
    return value


def _out_folder(value: Path | None) -> Path | None:
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{printable(value)} is a file; --out names a folder")
    return value


#: options every command that reads a card or images takes (parsed by their callbacks)
MaxPixels = Annotated[int | None, typer.Option(
    "--max-pixels", callback=_max_pixels, help=f"refuse image files with more pixels "
    f"(checked from the header; default {DEFAULT_MAX_PIXELS:,})")]
TrustCard = Annotated[bool, typer.Option(
    "--trust-card", callback=_trust, help="let the model card name files outside its folder")]


def parse_methods(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise typer.BadParameter("give at least one method")
    for name in names:
        methods.get(name)
    return names


@app.command("methods")
def list_methods() -> None:
    """List the explanation methods and what each needs from the model."""
    table = Table("method", "name", "needs from the model", "what the colours mean")
    for name in methods.names():
        cls = methods.get(name)
        table.add_row(cls.title, name, cls.needs.describe(), cls.meaning)
    out.print(table)


@app.command("layers")
@friendly
def list_layers(model: Annotated[Path, typer.Option("--model", help="model card (JSON)")],
                trust_card: TrustCard = False) -> None:
    """List the model's layer names (for --layer) and the one 'auto' picks."""
    from .model_card import load_model

    clf = load_model(model)
    auto, _ = clf.layer("auto")
    for name in clf.layer_names():
        out.print(name + ("   <- auto" if name == auto else ""), highlight=False)


@app.command("explain")
@friendly
def explain_cmd(
    images: Annotated[list[Path], typer.Argument(
        help="image files, or folders of images (unreadable files among several are "
             "skipped with a warning)")],
    model: Annotated[Path, typer.Option("--model", help="model card (JSON)")],
    method_spec: Annotated[str, typer.Option("--methods", help="comma-separated names")
                           ] = DEFAULT_METHODS,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="explain the k top classes")] = 1,
    target: Annotated[str | None, typer.Option(
        help="explain this class instead: an index or a class name (e.g. \"tabby cat\")")
    ] = None,
    threshold: Annotated[float | None, typer.Option(
        help="explain every class whose probability is at least this (e.g. every finding "
             "of a multi-label model above 0.5) instead of the top k")] = None,
    layer: Annotated[str, typer.Option(help="layer for CAM methods")] = "auto",
    out_dir: Annotated[Path, typer.Option("--out", help="output folder", callback=_out_folder)
                       ] = Path("mindlens-out"),
    gray_saliency: Annotated[bool, typer.Option(help="show saliency as a gray map")] = False,
    unit: Annotated[Path | None, typer.Option(help="trained MACE unit (for --methods mace)")
                    ] = None,
    baselines: Annotated[str | None, typer.Option(
        help="occlusion fill values to compare, e.g. zero,mean,blur,0.5 (needs occlusion "
             "in --methods); adds a baseline-sensitivity figure per image")] = None,
    occlusion_mode: Annotated[str, typer.Option(
        help="auto: the exact map, through the incremental engine where the model allows "
             "it (checked against the whole model), else the whole model; exact: every "
             "window through the whole model; incremental: the same map, recomputing each "
             "layer only where the window reaches (several times faster), unchecked; "
             "approximate: a quick preview (drill-down in bfloat16), its measured error in "
             "summary.json")] = "auto",
    window: Annotated[int | None, typer.Option(
        min=1, help="occlusion window in pixels (default: 16/224 of the image side)")] = None,
    stride: Annotated[int | None, typer.Option(
        min=1, help="occlusion stride in pixels (default: half the window)")] = None,
    masks: Annotated[Path | None, typer.Option(
        help="folder of expert masks (same file stems as the images): the verdict says how "
             "much of the evidence lies on them")] = None,
    trusted: Annotated[str | None, typer.Option(
        help="the method whose picture the verdict shows (default: the one --criteria "
             "recommends, else Grad-CAM)")] = None,
    criteria: Annotated[Path | None, typer.Option(
        help="criteria.json of `mindlens evaluate` on this model: picks the trusted method")
    ] = None,
    max_pixels: MaxPixels = None,
    trust_card: TrustCard = False,
) -> None:
    """Explain IMAGES (files or folders; or volumes: NIfTI/.npy, for a card with input_size
    [D, H, W]) with several methods; write DIR/report.html (verdict first), DIR/<image>.npz
    (one [T, H, W] array per method, and their provenance), DIR/<image>.png (original |
    each method, top class; slice montages for volumes) and DIR/summary.json."""
    from .cases import Input, Request, expand_paths, write_outputs
    from .model_card import load_model

    names = parse_methods(method_spec)
    if occlusion_mode not in OCCLUSION_MODES:
        raise InputError(f"--occlusion-mode must be one of {', '.join(OCCLUSION_MODES)}, "
                         f"got {occlusion_mode!r}")
    params: dict[str, dict[str, Any]] = {"occlusion": {"mode": occlusion_mode,
                                                        "window": window, "stride": stride}}
    if unit is not None:
        params["mace"] = {"unit": str(unit)}
    request = Request(methods=names, target=_target(target), top_k=top_k, layer=layer,
                      params=params, baselines=_baselines(baselines, names), trusted=trusted,
                      criteria=criteria, threshold=threshold, max_pixels=max_pixels)
    paths = _readable_images(expand_paths(images))
    mask_files = _mask_files(paths, masks)
    clf = load_model(model)
    inputs = [Input(p, mask=None if m is None else _read_mask(m)) for p, m in
              zip(paths, mask_files, strict=True)]
    cases = _run_with_progress(clf, inputs, request)
    written = write_outputs(cases, out_dir, title=f"mindlens: {clf.name}", request=request,
                            saliency_style="gray" if gray_saliency else "overlay")
    out.print(f"wrote {written['report']}", highlight=False)


def _target(spec: str | None) -> int | str | None:
    """--target: an index, or a class name resolved against the model's labels."""
    if spec is None:
        return None
    if spec.strip().lstrip("-").isdigit():
        return int(spec)
    try:
        float(spec)
    except ValueError:
        return spec  # a class name
    raise InputError(f"--target must be a whole class index or a class name, got {spec!r}: "
                     f"a fractional class is not a class")


def _mask_files(paths: list[Path], masks: Path | None) -> list[Path | None]:
    if masks is None:
        return [None] * len(paths)
    if not masks.is_dir():
        raise InputError(f"--masks must be a folder of mask images, got {masks}")
    by_stem = {p.stem: p for p in masks.iterdir() if p.is_file()}
    return [by_stem.get(p.stem) for p in paths]


def _read_mask(path: Path) -> np.ndarray:
    """A mask image: nonzero pixels are marked."""
    from .io import read_image

    return read_image(path).max(axis=-1) > 0


def _run_with_progress(clf: Any, inputs: list[Any], request: Any) -> list[Any]:
    from .cases import run

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("explaining", total=len(inputs) * len(request.methods))
        return run(clf, inputs, request, progress=lambda _name: bar.advance(task),
                   warn=lambda name, why: err.print(f"[yellow]skipped {name}:[/] {why}",
                                                    highlight=False))


#: methods of ``mindlens evaluate --demo`` by default: all but occlusion, which needs about
#: 1000 forward passes per image at 128 px, times the re-runs of the robustness, class and
#: sanity metrics (area occlusion needs about 80 and stays), and rise (6000 by default)
DEMO_SKIP = ("occlusion", "rise")
DEMO_SEED = 7777  # the demo models were trained on seed 0 and tested on seed 1


@app.command("evaluate")
@friendly
def evaluate_cmd(
    model: Annotated[Path | None, typer.Option("--model", help="model card (JSON)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="folder of images")] = None,
    masks: Annotated[Path | None, typer.Option("--masks", help="folder of expert masks, "
                                               "same file stems as the images")] = None,
    method_spec: Annotated[str | None, typer.Option("--methods", help="comma-separated names "
                                                    "(default: all)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="output folder", callback=_out_folder)
                       ] = Path("mindlens-eval"),
    steps: Annotated[int, typer.Option(help="deletion/insertion steps")] = 50,
    demo: Annotated[str | None, typer.Option(
        "--demo", help="'retina': evaluate the bundled demo model on fresh synthetic fundus "
        "images with their exact lesion masks (no files needed; --model/--data not used)")
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="number of demo images")] = 40,
    tolerance: Annotated[float | None, typer.Option(
        help="pointing-game tolerance in pixels (default: 15 px at 224 px, proportionally "
        "less for smaller inputs; 4 with --demo)")] = None,
    budget: Annotated[float | None, typer.Option(
        "--budget", help="seconds per method at most (estimated before the run): a method "
        "that would take longer runs on as many images as fit, or is left out")] = None,
    colour_check: Annotated[bool | None, typer.Option(
        "--colour-check/--no-colour-check", help="grade 'colour bias' on the colour-shortcut "
        "benchmark (default: on with --demo)")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="replace a run already in --out (by default only the same "
        "model, data and settings resume there; another run is refused)")] = False,
    max_pixels: MaxPixels = None,
    trust_card: TrustCard = False,
) -> None:
    """Measure every method on your model and data: the criteria table (criteria.html,
    criteria.json, results.csv). A killed run started again resumes where it stopped;
    a different model, data or settings into the same --out is refused (or --overwrite).
    With --demo retina: which methods localise the lesions (occlusion left out unless
    named in --methods; MACE uses the bundled concept unit)."""
    from .evaluate import collect, evaluate
    from .evaluation_report import write_html

    names = parse_methods(method_spec) if method_spec else None
    params: dict[str, dict[str, Any]] = {}
    words: dict[str, str] = {}
    if demo is not None:
        from .demo import demo_unit_path, load_demo_model, retina

        if demo != "retina":
            raise typer.BadParameter(f"--demo must be 'retina', got {demo!r}")
        clf = load_demo_model("retina")
        pixels, labels, lesion_masks = retina.generate(n, DEMO_SEED)
        images: list[Any] = list(pixels)
        mask_files: list[Any] | None = [m if y == 1 else None for m, y in zip(lesion_masks, labels,
                                                                        strict=True)]
        names = names or [m for m in methods.names() if m not in DEMO_SKIP]
        unit = demo_unit_path("retina")
        if unit is not None:
            params["mace"] = {"unit": str(unit)}
        tolerance = 4.0 if tolerance is None else tolerance
        colour_check = True if colour_check is None else colour_check
        words = {"region": "a lesion", "subjects": "diseased eyes"}
    else:
        from .model_card import load_model

        if model is None or data is None:
            raise typer.BadParameter("give --model and --data, or --demo retina")
        clf = load_model(model)
        images, mask_files = collect(data, masks)
        if masks is None:
            mask_files = None
    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(method: str, done: int, total: int) -> None:
            if method not in tasks:
                tasks[method] = bar.add_task(method, total=total)
            bar.update(tasks[method], completed=done)

        def show_estimates(estimates: list[Any]) -> None:
            total = sum(e.seconds for e in estimates)
            for e in estimates:
                what = e.skipped or (f"about {e.seconds:.0f} s for {e.images} image(s)"
                                     + (f" (of {e.total}, --budget)" if e.images < e.total
                                        else ""))
                err.print(f"  {e.method}: {what}", highlight=False)
            err.print(f"estimated total: about {total / 60:.1f} min", highlight=False)

        table = evaluate(clf, images, mask_files, names, out_dir,
                         steps=steps, progress=progress, params=params,
                         tolerance=tolerance, colour_check=bool(colour_check),
                         overwrite=overwrite, budget=budget, on_estimates=show_estimates)
    path = write_html(table, out_dir / "criteria.html", clf.name, len(images), **words,
                      data_label="synthetic demo data" if demo else "your data")
    out.print(table.to_markdown(), highlight=False)
    out.print(f"wrote {path}", highlight=False)


@app.command("demo")
@friendly
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="output folder", callback=_out_folder)
                       ] = Path("demo-report"),
    method_spec: Annotated[str | None, typer.Option("--methods", help="comma-separated names "
                                                    "(default: every method)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the fresh demo test images")] = 2026,
) -> None:
    """Explain a handful of synthetic retina screening images with every method: a diseased
    and a healthy eye, a hard case and a model that learnt a shortcut. Each case opens with
    the verdict: did the model look at the lesions the expert marked? Writes
    DIR/report.html (and the arrays, pictures and summary.json); no download needed."""
    from .cases import write_outputs
    from .demo.cases import demo_inputs, demo_request

    names = parse_methods(method_spec) if method_spec else methods.names()
    request = demo_request(names)
    inputs = demo_inputs(seed)
    cases = _run_with_progress(inputs[0].classifier, inputs, request)
    written = write_outputs(cases, out_dir, request=request,
                            title="mindlens demo: diabetic retinopathy screening")
    out.print(f"wrote {written['report']}", highlight=False)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command("serve")
@friendly
def serve_cmd(
    model: Annotated[list[Path] | None, typer.Option(
        "--model", help="model card (JSON); repeat for two models side by side")] = None,
    images: Annotated[Path | None, typer.Option(help="folder of images the page offers")
                      ] = None,
    masks: Annotated[Path | None, typer.Option(
        help="folder of expert masks (same file stems as --images): gives the verdict")] = None,
    unit: Annotated[Path | None, typer.Option(help="trained MACE unit (adds mace)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    token: Annotated[str | None, typer.Option(
        help="require this token on every API call (a link with it logs the page in)")] = None,
    insecure: Annotated[bool, typer.Option(
        help="allow a non-loopback --host without --token")] = False,
    demo: Annotated[bool, typer.Option(
        "--demo", help="the demo world: the retina model and fresh demo images with their "
        "lesion masks (no files needed)")] = False,
    max_upload_mb: Annotated[float, typer.Option(help="largest upload, MB")] = 20.0,
    max_pixels: Annotated[int, typer.Option(help="largest image, pixels (from its header)")
                          ] = 50_000_000,
    workers: Annotated[int, typer.Option(min=1, help="explanations at once")] = 2,
    audit: Annotated[list[Path] | None, typer.Option(
        "--audit", help="a scan store or a folder of `mindlens audit` (repeatable): the "
        "strategy audit view at /audit; a store is audited when the server starts (no "
        "--model needed)")] = None,
    audit_region: Annotated[str, typer.Option(
        help="what the masks of an --audit store mark, for the flags' words (e.g. lesion)")
                            ] = "region",
) -> None:
    """Serve a web page (and a JSON API, spec at /openapi.json, rendered at /docs) that
    explains the model's decision on an uploaded image: the verdict and the trusted
    picture first, the other methods on demand. With --audit, also the model's strategies
    across a dataset: per class, the images placed by their explanations, by strategy."""
    try:
        import uvicorn

        from .web import create_app
    except ImportError as e:
        raise InputError(f"mindlens serve needs the web extra: pip install 'mindlens[web]' "
                         f"({e})") from None
    if host not in LOOPBACK and not token and not insecure:
        raise InputError(f"--host {host} makes the server reachable from other machines: give "
                         f"--token T (or --insecure to serve without one)")
    if host not in LOOPBACK and not token:
        err.print(f"[bold red]warning: serving on {host} without a token (--insecure): "
                  f"anyone who reaches this address can use it[/]", highlight=False)
    kw: dict[str, Any] = {"max_bytes": int(max_upload_mb * 1024 * 1024),
                          "max_pixels": max_pixels, "workers": workers}
    if demo:
        from .demo import demo_unit_path, load_demo_model
        from .demo.cases import WORDS, demo_request
        from .web.pictures import demo_pictures

        web = create_app({"retina": load_demo_model("retina")}, unit=unit or
                         demo_unit_path("retina"), token=token, pictures=demo_pictures(),
                         words=WORDS, target=1, title="mindlens demo",
                         params=demo_request(["gradcam"]).params, audits=audit,
                         audit_region=audit_region, **kw)
    else:
        if not model and not audit:
            raise typer.BadParameter("give --model CARD (repeatable), --audit STORE, or --demo")
        names = _model_names(model or [])
        web = create_app(dict(zip(names, model or [], strict=True)), images, masks, unit, token,
                         audits=audit, audit_region=audit_region, **kw)
    shown = "localhost" if host in LOOPBACK else host
    link = f"http://{shown}:{port}/" + (f"login?token={token}" if token else "")
    out.print(f"mindlens serve: open {link}", highlight=False)
    if audit:
        out.print(f"the strategy audit: http://{shown}:{port}/audit (after the link above "
                  f"when a token is set)", highlight=False)
    uvicorn.run(web, host=host, port=port, log_level="warning")


def _model_names(cards: list[Path]) -> list[str]:
    """Names for the served models: the card file stems, numbered when they repeat."""
    names: list[str] = []
    for c in cards:
        name, i = c.stem, 1
        while name in names:
            i += 1
            name = f"{c.stem}_{i}"
        names.append(name)
    return names


def _mount_subcommands() -> None:
    from .methods.mace.cli import app as mace_app

    for command in mace_app.registered_commands:  # one-line failures and Ctrl-C there too
        if command.callback is not None:
            command.callback = friendly(command.callback)
    app.add_typer(mace_app, name="mace", help="Train MACE concept units.")
    from .scans.cli import audit_cmd, scan_cmd

    app.command("scan")(friendly(scan_cmd))
    app.command("audit")(friendly(audit_cmd))


_mount_subcommands()


def _baselines(spec: str | None, names: list[str]) -> list[str | float]:
    """The occlusion fill values of --baselines (empty when not given)."""
    from .sensitivity import parse_baselines

    if spec is None:
        return []
    if "occlusion" not in names:
        raise InputError("--baselines compares occlusion maps: add occlusion to --methods "
                         "(e.g. --methods occlusion --baselines zero,mean,blur)")
    return parse_baselines(spec)


def main(argv: list[str] | None = None) -> int:
    """The console script: run a command; usage errors too are one line, exit code 2."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="mindlens")
    except typer.Exit as e:
        return int(e.exit_code)
    except typer.Abort:  # Ctrl-C while the command line itself was read
        err.print("interrupted: nothing was written", highlight=False)
        return 130
    except typer.TyperException as e:  # a usage error (bad option value, missing option)
        ctx = getattr(e, "ctx", None)
        command = f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else ""
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        fail(f"{message} (see mindlens{command} --help)")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted: nothing was written", highlight=False)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
