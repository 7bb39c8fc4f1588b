"""The ``mindlens scan`` and ``mindlens audit`` commands (mounted by :mod:`mindlens.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .engines import ScanStatus

err = Console(stderr=True)
out = Console()


def scan_cmd(
    model: Annotated[Path, typer.Option("--model", help="model card (JSON)")],
    data: Annotated[Path, typer.Option("--data", help="folder of images (sub-folders name "
                                       "the labels) or a CSV list: path[,label][,mask]")],
    method_spec: Annotated[str, typer.Option("--methods", help="comma-separated names")
                           ] = "gradcam",
    out_dir: Annotated[Path, typer.Option("--out", help="the store folder")
                       ] = Path("mindlens-store"),
    masks: Annotated[Path | None, typer.Option("--masks", help="folder of masks (same file "
                                               "stem as the image)")] = None,
    target: Annotated[str, typer.Option(help="predicted, label, or a class index")
                      ] = "predicted",
    size: Annotated[int, typer.Option(min=1, help="analysis resolution of the stored maps")
                    ] = 64,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="top classes in the index")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1,
                                            help="images per batch (= per store chunk)")] = 16,
    native: Annotated[bool, typer.Option("--native", help="also keep the maps at the "
                                         "model's input resolution (float16)")] = False,
    engine: Annotated[str, typer.Option(help="local or ray")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (--engine ray)")
                       ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors (--engine ray without "
                                         "--address)")] = 2,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace another run in "
                                            "--out (the same run always resumes)")] = False,
) -> None:
    """Explain every image of a folder or CSV list into a store (Zarr maps + Parquet
    index) that other tools read without mindlens. A killed scan started again resumes;
    another model, data or settings into the same --out is refused (or --overwrite)."""
    from ..cli import parse_methods
    from . import scan

    names = parse_methods(method_spec)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("scan", total=None, rate="")

        def progress(s: ScanStatus) -> None:
            bar.update(task, total=s.total, completed=s.done,
                       rate=f"{s.images_per_s:.1f} images/s")

        result = scan(model, data, names, out_dir, masks=masks, target=target, size=size,
                      top_k=top_k, batch_size=batch_size, native=native, engine=engine,
                      address=address, workers=workers, overwrite=overwrite,
                      progress=progress)
    what = "resumed" if result.resumed else "scanned"
    out.print(f"{what}: {result.computed} image(s) explained now, {result.images} in the "
              f"store; wrote {result.index}", highlight=False)


def audit_cmd(
    store: Annotated[Path, typer.Argument(help="a store written by `mindlens scan`")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for audit.html and "
                                          "audit.json")] = Path("mindlens-audit"),
    method: Annotated[str | None, typer.Option(help="which method's maps (default: the "
                                               "store's first)")] = None,
    classes: Annotated[str | None, typer.Option(help="comma-separated class names "
                                                "(default: every class)")] = None,
    neighbours: Annotated[int, typer.Option(min=1, help="k of the kNN graph")] = 10,
    clusters: Annotated[int | None, typer.Option(min=1, help="force this many clusters "
                                                 "(default: the eigengap)")] = None,
    region: Annotated[str, typer.Option(help="what the masks mark, for the flags' words "
                                        "(e.g. lesion)")] = "region",
    min_images: Annotated[int, typer.Option("--min-images", min=3, help="skip classes with "
                                            "fewer images")] = 10,
) -> None:
    """Find the model's strategies per class (SpRAy: spectral clustering of the maps),
    where each puts its evidence, and flag those at a fixed place or outside the marks:
    audit.html (self-contained) and audit.json."""
    from ..spray import audit

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    result = audit(store, out_dir, method=method, classes=names, k_neighbours=neighbours,
                   n_clusters=clusters, region=region, min_images=min_images)
    for cls, c in result["classes"].items():
        out.print(f"{cls}: {c['images']} images, {c['k']} strategies", highlight=False)
        for f in c["flags"]:
            out.print(f"  ! {f}", highlight=False)
    out.print(f"wrote {out_dir / 'audit.html'} and {out_dir / 'audit.json'}", highlight=False)
