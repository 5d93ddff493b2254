"""`orchestrator predict`: a checkpoint, an ensemble or a registered model on a CSV or text."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.base import UserInputError, user_errors
from orchestrator.contract import ENSEMBLE_MANIFEST_FILE

if TYPE_CHECKING:
    from orchestrator.predict.predictor import Predictor


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option(
    "--checkpoint", type=click.Path(), default=None,
    help="A trial's best checkpoint directory (model.safetensors, config.json, tokenizer).",
)  # fmt: skip
@click.option(
    "--ensemble", "ensemble_dir", type=click.Path(), default=None,
    help="What `orchestrator ensemble` wrote (results/SWEEP/ensemble/, with manifest.json).",
)  # fmt: skip
@click.option(
    "--model", "model_uri", default=None, metavar="models:/NAME/VERSION",
    help="A registered model, from $MLFLOW_TRACKING_URI or RESULTS_DIR/mlflow.db.",
)  # fmt: skip
@click.option(
    "--task", default=None, metavar="sst|para|sts",
    help="The input's task, when its columns or lines do not say (two sentences per line).",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(), default=None,
    help="Output file, written atomically (default: standard output).",
)  # fmt: skip
@click.option(
    "--format", "out_format", type=click.Choice(["csv", "leaderboard"]), default="csv",
    show_default=True,
    help="csv: id, prediction, probabilities; leaderboard: the CS224N file (needs --out).",
)  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda where one is.")
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
    help="Where the MLflow store of --model is, without $MLFLOW_TRACKING_URI.",
)  # fmt: skip
@user_errors
def predict(
    input_path: str,
    checkpoint: str | None,
    ensemble_dir: str | None,
    model_uri: str | None,
    task: str | None,
    out: str | None,
    out_format: str,
    device: str,
    results_dir: str,
) -> None:
    """Predict INPUT (a CS224N CSV, or text: one sentence or two TAB-separated ones per line;
    `-` reads standard input) with a checkpoint, an ensemble or a registered model.

    \b
    Example:
      orchestrator predict --ensemble results/quickstart/ensemble sts-test-student.csv --task sts
      printf 'a gripping film\\nflat and dull\\n' | orchestrator predict --checkpoint DIR -
      orchestrator predict --model models:/minbert/1 pairs.txt --task para --out preds.csv
    """
    from orchestrator.predict.inputs import read_predict_input
    from orchestrator.predict.outputs import PredictProgress, write_output

    sources = [s for s in (checkpoint, ensemble_dir, model_uri) if s]
    if len(sources) != 1:
        raise UserInputError(
            "give one model: --checkpoint DIR, --ensemble DIR or --model models:/NAME/VERSION"
        )
    if out_format == "leaderboard" and out is None:
        raise UserInputError("--format leaderboard writes a file: add --out FILE")
    out_path = Path(out) if out else None
    if out_path is not None:
        _check_out(out_path)
    inputs = read_predict_input(input_path, task)
    for note in inputs.warnings:
        click.echo(f"warning: {note}", err=True)
    predictor = _load(checkpoint, ensemble_dir, model_uri, device, Path(results_dir))
    progress = PredictProgress(
        len(inputs.examples) * len(predictor.members),
        terminal=sys.stderr.isatty(),
        echo=lambda line: click.echo(line, err=True),
    )
    try:
        predictions = predictor.predict_examples(inputs.task, inputs.examples, on_batch=progress)
    finally:
        progress.close()
    write_output(predictions, out_path, out_format, sys.stdout)
    if out_path is not None:
        click.echo(f"{inputs.task}: {len(inputs.examples)} predictions in {out_path}", err=True)


def _load(
    checkpoint: str | None,
    ensemble_dir: str | None,
    model_uri: str | None,
    device: str,
    results_dir: Path,
) -> Predictor:
    """The model asked for (torch and the model code are imported only now: slow to import)."""
    from orchestrator.predict.predictor import load_predictor

    if model_uri is not None:
        from orchestrator.registry.models import download_model
        from orchestrator.tracking.writer import tracking_uri

        # load_predictor reads the weights, tokenizers and configs into memory: the downloaded
        # copy (a whole model) goes when it returns.
        with tempfile.TemporaryDirectory(prefix="orchestrator-model-") as tmp:
            downloaded = download_model(tracking_uri(results_dir), model_uri, Path(tmp))
            return load_predictor(downloaded, device=device)
    directory = Path(checkpoint or ensemble_dir or "")
    if ensemble_dir is not None and not (directory / ENSEMBLE_MANIFEST_FILE).is_file():
        raise UserInputError(
            f"--ensemble {directory}: no {ENSEMBLE_MANIFEST_FILE} there (run `orchestrator "
            "ensemble` to write one)"
        )
    return load_predictor(directory, device=device)


def _check_out(out: Path) -> None:
    """--out must be a file we can create: not a directory, its folder creatable."""
    from orchestrator.cluster import check_creatable

    if out.is_dir():
        raise UserInputError(f"--out {out}: is a directory; --out names the file to write")
    check_creatable(out.absolute().parent, f"--out {out}")
