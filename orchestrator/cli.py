"""The `orchestrator` command line (click): noun-verb commands, one-line errors, exit 2."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from model.checkpoint import CheckpointError
from model.config import ConfigError
from model.data import DataError
from model.data_dir import check_data_dir, data_check_table, default_data_dir
from model.weights import WeightsError

F = TypeVar("F", bound=Callable[..., Any])

# Errors caused by what the user gave us (a file, a flag, a config value): one line, exit 2.
# model.train.NonFiniteLossError (a diverging loss: change optim.lr, ...) is a ConfigError, so
# this module need not import model.train (and scipy, ~0.5 s) at startup to list it.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, WeightsError, CheckpointError)


class UserInputError(click.ClickException):
    """A one-line error about the user's input; exits with status 2 like click's usage errors."""

    exit_code = 2


def user_errors(func: F) -> F:
    """Turn the project's input errors into one-line click errors with exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as err:
            raise UserInputError(str(err).splitlines()[0]) from err

    return wrapper  # type: ignore[return-value]


def resolve_data_dir(option: str | None) -> Path:
    """--data-dir, else $ORCHESTRATOR_DATA_DIR, else the default location; must exist."""
    path = Path(option) if option else default_data_dir()
    if not path.is_dir():
        raise DataError(
            f"{path}: data directory not found; pass --data-dir DIR or set ORCHESTRATOR_DATA_DIR"
        )
    return path


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="CS224N data directory (default: $ORCHESTRATOR_DATA_DIR, then ../shared/data/cs224n).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sweep orchestrator for multitask minBERT (SST-5, Quora, STS-B).

    \b
    Example:
      orchestrator train configs/quickstart.yaml --set optim.lr=3e-5
      orchestrator sweep search_spaces/quickstart.yaml
      orchestrator ensemble --top 5
    """


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set optim.lr=3e-5 (repeatable).",
)
@data_dir_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output directory.")
@user_errors
def train(config: str, overrides: tuple[str, ...], data_dir: str | None, out: str | None) -> None:
    """Train one multitask minBERT from CONFIG (YAML), without Ray.

    \b
    Example:
      orchestrator train configs/quickstart.yaml --set optim.epochs=1 --out results/try1
    """
    from model.checkpoint import RunLayout
    from model.progress import best_epoch_summary
    from model.train import fit
    from orchestrator.cluster import check_creatable
    from orchestrator.config import load_train_config

    cfg = load_train_config(Path(config), overrides)
    data_path = resolve_data_dir(data_dir or cfg.data.data_dir)
    out_dir = Path(out) if out else Path("results") / "train" / Path(config).stem
    check_creatable(out_dir, f"--out {out_dir}")
    if cfg.data.cache_dir:
        check_creatable(Path(cfg.data.cache_dir), f"data.cache_dir {cfg.data.cache_dir}")
    result = fit(cfg, data_dir=data_path, out_dir=out_dir, progress=sys.stderr.isatty())
    layout = RunLayout(out_dir)
    click.echo(best_epoch_summary(result.best_metrics, result.epochs_run, result.selected_by))
    if "partial" in cfg.data.para_train:
        click.echo("note: Quora trained on the first 5,000 training pairs only (partial file).")
    click.echo(f"metrics:     {layout.metrics}")
    click.echo(f"checkpoint:  {result.best_checkpoint}")
    click.echo(f"predictions: {layout.predictions}")


@main.group()
def data() -> None:
    """Inspect the CS224N data directory."""


@data.command("check")
@click.argument("directory", type=click.Path(file_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@user_errors
def data_check(directory: str | None, as_json: bool) -> None:
    """Validate a data directory: files present, row counts, labels, sha256 of known files.

    \b
    Example:
      orchestrator data check ../shared/data/cs224n
    """
    path = resolve_data_dir(directory)
    checks = check_data_dir(path)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2, default=str))
    else:
        from rich.console import Console

        Console(width=int(os.environ.get("COLUMNS", 160))).print(data_check_table(path, checks))
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise UserInputError(
            f"{path}: {len(failed)} file(s) missing or wrong: {', '.join(failed)}"
        )


@main.command()
@click.argument("space_file", metavar="SPACE.yaml", type=click.Path(dir_okay=False))
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="Configs to sample.")
@click.option("--name", default=None, help="Sweep name (default: the space's); results/NAME/.")
@click.option(
    "--address", default=None, help="Join a Ray cluster (auto, HOST:PORT); default: local Ray."
)
@data_dir_option
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@click.option("--resume", is_flag=True, help="Continue a sweep whose driver died.")
@click.option("--dry-run", is_flag=True, help="Validate and print sampled configs; no training.")
@user_errors
def sweep(
    space_file: str,
    num_samples: int | None,
    name: str | None,
    address: str | None,
    data_dir: str | None,
    results_dir: str,
    resume: bool,
    dry_run: bool,
) -> None:
    """Explore SPACE.yaml with Optuna on Ray Tune (ASHA), logging every trial to MLflow.

    \b
    Example:
      orchestrator sweep search_spaces/quickstart.yaml
      orchestrator sweep search_spaces/smart.yaml --dry-run --num-samples 4
      orchestrator sweep search_spaces/smart.yaml --resume
    """
    from orchestrator.cluster import check_creatable, local_results_dir, parse_address
    from orchestrator.space import check_name, load_space

    address = parse_address(address)
    space = load_space(space_file)
    if num_samples is not None:
        space = space.replace(num_samples=num_samples)
    if name is not None:
        space = space.replace(name=check_name(name))
    # Checked before a dry run too, so "valid" means the real run would start.
    data_path = resolve_data_dir(data_dir or space.base.data.data_dir)
    local_results = local_results_dir(results_dir)
    check_creatable(local_results, f"--results-dir {results_dir}")
    if space.study is not None and dry_run:
        from orchestrator.study_phases import study_dry_run_lines  # no Ray for a plan

        lines: list[str] = study_dry_run_lines(space)
    elif space.study is not None:
        from orchestrator.study_run import study_command_lines

        lines = study_command_lines(space, data_path, local_results, address, resume)
    elif dry_run:
        from orchestrator.search import dry_run_lines  # Optuna only: a dry run starts no Ray

        lines = list(dry_run_lines(space))
    else:
        from orchestrator.sweep import run_sweep

        lines = run_sweep(
            space, data_dir=data_path, results_dir=local_results, address=address, resume=resume
        ).summary()
    for line in lines:
        click.echo(line)


@main.command()
@click.option("--top", "top", type=int, required=True, help="Members: the K best finished trials.")
@click.option("--sweep", "sweep_name", default=None, help="Sweep name (default: the newest).")
@click.option(
    "--metric", default=None,
    help="Metric ranking the trials [default: selection/overall when they logged it, else "
    "dev/overall]; greedy steps score its dev namesake.",
)  # fmt: skip
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@data_dir_option
@click.option("--splits", default="dev,test", show_default=True, help="Splits to predict.")
@click.option(
    "--method", type=click.Choice(["vote", "mean"]), default="vote", show_default=True,
    help="vote: mode of labels (ties by mean probability), median of STS; mean: average.",
)  # fmt: skip
@click.option(
    "--select", type=click.Choice(["top", "greedy"]), default="top", show_default=True,
    help="greedy: forward selection with replacement on dev (Caruana et al. 2004), K steps.",
)  # fmt: skip
@click.option(
    "--dev", "dev_examples", type=click.Choice(["full", "sweep"]), default="full",
    show_default=True,
    help="Score on the full dev files, or on the trials' fixed dev subsets (faster on CPU).",
)  # fmt: skip
@user_errors
def ensemble(
    top: int,
    sweep_name: str | None,
    metric: str | None,
    results_dir: str,
    data_dir: str | None,
    splits: str,
    method: str,
    select: str,
    dev_examples: str,
) -> None:
    """Combine the K best trials of a sweep into leaderboard predictions (results/SWEEP/ensemble/).

    \b
    Example:
      orchestrator ensemble --top 5
      orchestrator ensemble --top 3 --sweep smart --select greedy --method mean
    """
    from orchestrator.ensemble import EnsembleRequest
    from orchestrator.ensemble_run import run_ensemble, summary_lines

    request = EnsembleRequest(
        top=top,
        sweep=sweep_name,
        results_dir=Path(results_dir),
        data_dir=Path(data_dir) if data_dir else None,
        metric=metric,
        method=method,
        select=select,
        splits=tuple(s.strip() for s in splits.split(",") if s.strip()),
        dev_subset=dev_examples == "sweep",
    )
    # Progress goes to stderr, the summary to stdout.
    result = run_ensemble(
        request, resolve_data=resolve_data_dir, echo=lambda line: click.echo(line, err=True)
    )
    for line in summary_lines(request, result):
        click.echo(line)


@main.command()
@click.argument("sweep_name", metavar="[SWEEP]", required=False)
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@click.option("--no-mlflow", is_flag=True, help="Do not log the report to the sweep's parent run.")
@user_errors
def report(sweep_name: str | None, results_dir: str, no_mlflow: bool) -> None:
    """Write results/SWEEP/: trials.parquet, ablation.md, importance.md and plots/ (default: the
    newest sweep), and log them to the sweep's parent MLflow run. For an ablation study:
    ablation.md/.parquet/.tex of its confirm runs, SST details and learning curves.

    \b
    Example:
      orchestrator report smart
    """
    from orchestrator.results import write_report

    written = write_report(sweep_name, results_dir=Path(results_dir), log_to_mlflow=not no_mlflow)
    click.echo(f"sweep {written.sweep}: {written.trials} trials")
    for note in written.notes:
        click.echo(f"note: {note}")
    for path in written.files:
        click.echo(f"  {path}")


@main.command()
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@click.option("--sweep", "sweep_name", default=None, help="Sweep to open (default: the newest).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@user_errors
def ui(results_dir: str, sweep_name: str | None, port: int) -> None:
    """Start the MLflow UI on 127.0.0.1 against the sweeps' tracking store; Ctrl-C stops it.
    The URL it prints opens the sweep's runs table (a study's: one averaged row per arm).

    \b
    Example:
      orchestrator ui --port 5001
    """
    from orchestrator.results import ui_target

    command, url = ui_target(Path(results_dir), sweep_name, port)
    click.echo(f"MLflow UI: {url}")
    sys.stdout.flush()
    # Become the server, so Ctrl-C and kill signals reach it directly.
    os.execv(command[0], command)


@main.command("tracking-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option(
    "--backend-store-uri",
    envvar="MLFLOW_BACKEND_STORE_URI",
    default="sqlite:///results/mlflow.db",
    show_default=True,
    help="sqlite:///PATH or postgresql://USER@HOST:5432/DB (password: PGPASSWORD or ~/.pgpass).",
)
@click.option(
    "--artifacts-destination",
    default="results/mlartifacts",
    show_default=True,
    help="Where the server stores artifacts it receives (a directory or s3://, gs://).",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--allowed-hosts", default=None, help="Host headers to accept, e.g. mlflow:5000.")
@user_errors
def tracking_server(
    host: str,
    port: int,
    backend_store_uri: str,
    artifacts_destination: str,
    workers: int,
    allowed_hosts: str | None,
) -> None:
    """Run an MLflow tracking server (UI + REST API) that also serves artifacts over HTTP.

    \b
    Example:
      orchestrator tracking-server --port 5000
      MLFLOW_TRACKING_URI=http://127.0.0.1:5000 orchestrator sweep SPACE.yaml --address HEAD:6379
    """
    from orchestrator.cluster import ClusterError
    from orchestrator.tracking.server import exec_tracking_server
    from orchestrator.tracking.server import tracking_server as server_command

    try:
        server = server_command(
            host=host,
            port=port,
            backend_store_uri=backend_store_uri,
            artifacts_destination=artifacts_destination,
            workers=workers,
            allowed_hosts=allowed_hosts,
        )
    except ClusterError as err:
        raise UserInputError(str(err)) from err
    for line in server.warnings:
        click.echo(line, err=True)
    click.echo(f"MLflow tracking server: {server.url}  (export MLFLOW_TRACKING_URI={server.url})")
    sys.stdout.flush()
    exec_tracking_server(server)


if __name__ == "__main__":
    main()
