"""The ``mindlens`` command line.

Bad input ends with exit code 2 and one line saying what was wrong, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from . import methods
from .errors import InputError, MindlensError, NotApplicableError
from .methods.perturbation.occlusion import MODES as OCCLUSION_MODES
from .render.panel import panel

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Read the mind of a CNN image classifier.")
err = Console(stderr=True)
out = Console()

DEFAULT_METHODS = "saliency,guided_backprop,cam,gradcam,guided_gradcam"


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn mindlens errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MindlensError as e:  # escaped: "pip install 'mindlens[store]'" is no markup
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


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
def list_layers(model: Annotated[Path, typer.Option("--model", help="model card (JSON)")]) -> None:
    """List the model's layer names (for --layer) and the one 'auto' picks."""
    from .model_card import load_model

    clf = load_model(model)
    auto, _ = clf.layer("auto")
    for name in clf.layer_names():
        out.print(name + ("   <- auto" if name == auto else ""), highlight=False)


@app.command("explain")
@friendly
def explain_cmd(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    model: Annotated[Path, typer.Option("--model", help="model card (JSON)")],
    method_spec: Annotated[str, typer.Option("--methods", help="comma-separated names")
                           ] = DEFAULT_METHODS,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="explain the k top classes")] = 1,
    target: Annotated[int | None, typer.Option(help="explain this class index instead")] = None,
    layer: Annotated[str, typer.Option(help="layer for CAM methods")] = "auto",
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("mindlens-out"),
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
) -> None:
    """Explain IMAGES (or volumes: NIfTI/.npy, for a card with input_size [D, H, W]) with
    several methods; write DIR/report.html, DIR/<image>.npz (one [T, H, W] array per
    method) and DIR/<image>.png (original | each method, top class; slice montages for
    volumes)."""
    from . import sensitivity
    from .api import explain
    from .methods.perturbation.sensitivity import baseline_sensitivity
    from .model_card import load_model
    from .report import Report

    names = parse_methods(method_spec)
    fills = _baselines(baselines, names)
    if occlusion_mode not in OCCLUSION_MODES:
        raise InputError(f"--occlusion-mode must be one of {', '.join(OCCLUSION_MODES)}, "
                         f"got {occlusion_mode!r}")
    clf = load_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(clf, title=f"mindlens: {clf.name}",
                    saliency_style="gray" if gray_saliency else "overlay")
    summary: dict[str, Any] = {"model": str(model), "methods": names, "images": {}}
    skipped: dict[str, str] = {}
    stems: set[str] = set()
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("explaining", total=len(images) * len(names))
        for path in images:
            x = clf.preprocess(path)
            results = {}
            for name in names:
                if name in skipped:
                    progress.advance(task)
                    continue
                try:
                    extra = {"unit": str(unit)} if name == "mace" and unit else {}
                    if name == "occlusion":
                        extra = {"mode": occlusion_mode}
                    if name == "occlusion" and fills:  # one run per fill value
                        sens = baseline_sensitivity(clf, x, fills, target=target, top_k=top_k,
                                                    **extra)
                        results[name] = sens["explanations"][sens["baselines"][0]]
                    else:
                        results[name] = explain(clf, x, name, target=target, top_k=top_k,
                                                layer=layer, **extra)
                except NotApplicableError as e:
                    skipped[name] = str(e)
                    err.print(f"[yellow]skipped {name}:[/] {e}", highlight=False)
                progress.advance(task)
            if not results:
                raise NotApplicableError("none of the requested methods can run on this model")
            stem = _unique(path.name[:-7] if path.name.lower().endswith(".nii.gz")
                           else path.stem, stems)
            np.savez_compressed(out_dir / f"{stem}.npz", **{
                n: e.maps[0].cpu().numpy().astype(np.float32) for n, e in results.items()})
            Image.fromarray(_picture(clf, x, results)).save(out_dir / f"{stem}.png")
            summary["images"][stem] = {"path": str(path), **{n: {
                "targets": e.targets[0].tolist(), "labels": [clf.label(int(c)) for c in
                                                             e.targets[0]],
                "probs": e.probs[0].tolist(), "signed": e.signed,
                "native_shape": list(e.native_shape),
                **({"approximation": e.extras["approximation"]} if "approximation" in
                   e.extras else {}),
                **({"exact_path": e.extras["exact_path"]} if "exact_path" in e.extras
                   else {})} for n, e in results.items()}}
            report.add(x, results, titles=[path.name], top_k=max(3, top_k))
            if fills and "occlusion" in results:
                summary["images"][stem]["baseline_sensitivity"] = sensitivity.summary(sens)
                report.add_figure(f"{path.name}: does the occlusion map depend on the fill "
                                  f"value?", sensitivity.figure(sens, clf, x),
                                  sensitivity.caption(sens, clf))
    summary["skipped"] = skipped
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    path = report.write(out_dir / "report.html")
    out.print(f"wrote {path}", highlight=False)


#: methods of ``mindlens evaluate --demo`` by default: all but occlusion, which needs about
#: 1000 forward passes per image at 128 px, times the re-runs of the robustness, class and
#: sanity metrics (area occlusion needs about 80 and stays)
DEMO_SKIP = ("occlusion",)
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
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("mindlens-eval"),
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
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("demo-report"),
    method_spec: Annotated[str | None, typer.Option("--methods", help="comma-separated names "
                                                    "(default: every method)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the fresh demo test images")] = 2026,
) -> None:
    """Explain a handful of synthetic retina screening images with every method: a diseased
    and a healthy eye, a hard case and a model that learnt a shortcut; next to each map,
    the lesions an expert would mark. Writes DIR/report.html; no download needed."""
    from .api import explain
    from .demo import demo_cases, demo_unit_path, load_demo_model
    from .report import Report

    names = parse_methods(method_spec) if method_spec else methods.names()
    models = {name: load_demo_model(name) for name in ("retina", "shortcut")}
    report = Report(models["retina"], title="mindlens demo: diabetic retinopathy screening")
    cases = demo_cases(seed=seed)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("explaining", total=len(cases) * len(names))
        for case in cases:
            clf = models[case["model"]]
            x = clf.preprocess(case["image"])
            results, skipped = {}, []
            wrong = (case["p_diseased"] > 0.5) != (case["label"] == 1)
            for name in names:
                # 16 px windows, stride 8: a 15x15 grid, readable and quick on a laptop CPU
                params: dict[str, Any] = {"window": 16, "stride": 8} if name == "occlusion" \
                    else {}
                if name == "mace":
                    # concepts explain any class: on a wrong decision show both classes
                    params["target"] = [[1, 0]] if wrong else 1
                    unit = demo_unit_path(case["model"])
                    if unit is None:
                        skipped.append("MACE: no concept unit is bundled for this model")
                        progress.advance(task)
                        continue
                    params["unit"] = str(unit)
                try:
                    results[name] = explain(clf, x, name, **{"target": 1, **params})
                except NotApplicableError as e:
                    skipped.append(f"{methods.get(name).title}: {e}")
                progress.advance(task)
            mask = case["mask"] | case["marker_mask"]
            note = ("Every map explains the class 'diseased'. The green outline marks the "
                    "lesions" + (" and the corner marker" if case["marker_mask"].any() else "")
                    + f"; model: {clf.name}."
                    + (" MACE concepts also explain 'healthy', "
                       + ("the model's (wrong) decision." if case["label"] == 1 else
                          "the true class.") if wrong and "mace" in results else ""))
            report.add(x, results, titles=[case["title"]], masks=mask[None],
                       pixels=case["image"][None], notes=[[note, *skipped]], classifier=clf)
    path = report.write(out_dir / "report.html")
    out.print(f"wrote {path}", highlight=False)


def _mount_subcommands() -> None:
    from .methods.mace.cli import app as mace_app

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


def _picture(clf: Any, x: Any, results: dict[str, Any]) -> np.ndarray:
    """The PNG per image: input | each method (top class); slice montages for volumes."""
    pixels = clf.display_pixels(x)[0]
    maps = {methods.get(n).title: (e.maps[0, 0].cpu().numpy(), e.signed)
            for n, e in results.items()}
    if pixels.ndim == 4:
        from .render.montage import montage, stack

        return stack([("input", montage(pixels))] + [
            (title, montage(pixels, m, signed)) for title, (m, signed) in maps.items()])
    return panel(pixels, maps)


def _unique(stem: str, seen: set[str]) -> str:
    name, i = stem, 1
    while name in seen:
        i += 1
        name = f"{stem}_{i}"
    seen.add(name)
    return name


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
