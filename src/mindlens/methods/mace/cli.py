"""``mindlens mace train``: train a MACE unit for a model card on a folder of images.

Mount in the main CLI with ``app.add_typer(mace.cli.app, name="mace")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from ...errors import MindlensError
from ...model_card import load_model
from .train import train

app = typer.Typer(help="MACE concept explanations: train a unit for a model.",
                  no_args_is_help=True)


@app.callback()
def main() -> None:
    """MACE concept explanations: train a unit for a model."""


@app.command("train")
def mace_train(
    model_card: Annotated[Path, typer.Option("--model", help="model card (JSON)")],
    data_dir: Annotated[Path, typer.Option("--data", help="folder of training images "
                                           "(class subfolders optional; labels unused)")],
    out: Annotated[Path, typer.Option("--out", help="unit file to write (.safetensors)")],
    epochs: Annotated[int, typer.Option(help="passes over the images")] = 30,
    seed: Annotated[int, typer.Option(help="seed for initialisation, split and shuffling")] = 0,
    concepts: Annotated[int, typer.Option(help="concepts per class")] = 10,
    embed: Annotated[int, typer.Option(help="embedding size")] = 32,
    hidden: Annotated[int, typer.Option(help="width of the output generator")] = 256,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    val_fraction: Annotated[float, typer.Option(help="share held out for fidelity")] = 0.1,
    prototypes: Annotated[int, typer.Option(help="prototype crops kept per concept")] = 5,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default)")] = 0,
) -> None:
    """Train a MACE unit; a killed run started again with the same arguments resumes."""
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        clf = load_model(model_card)
        tu = train(clf, data_dir, out, epochs=epochs, seed=seed, concepts=concepts,
                   embed=embed, hidden=hidden, batch_size=batch_size, lr=lr,
                   val_fraction=val_fraction, prototypes=prototypes, progress=True)
    except MindlensError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {out}: fidelity {tu.fidelity:.1%} on {tu.meta['fidelity_on']} images "
               f"({tu.meta['train']['images']} images, layer {tu.attachment.layer!r}, "
               f"reconstructs {tu.meta['reconstructs']})")
