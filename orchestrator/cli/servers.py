"""`orchestrator tracking-server`: an MLflow tracking server for a cluster."""

from __future__ import annotations

import sys

import click

from orchestrator.cli.base import UserInputError, user_errors


@click.command("tracking-server")
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
def tracking_server_command(
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
    from orchestrator.tracking.server import exec_tracking_server, start_tracking_server

    try:
        server = start_tracking_server(
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
