"""MLflow bookkeeping of sweeps, the only package that imports mlflow.

- `writer`: the sweep driver's runs (a parent per sweep, a child per trial), the store's URI and
  retries while SQLite is locked.
- `store`: reading a sweep back (`ensemble`, `report`) and the runs those commands log.
- `provenance`: what a run records to be reproducible: config hash, data and git checksums.
- `views`: the MLflow UI: a stored runs-table view, its URL and the `orchestrator ui` command.
- `server`: `orchestrator tracking-server`, an `mlflow server` for a cluster's sweeps.
- `models`: an ensemble (or checkpoint) logged as a pyfunc model, registered, downloaded back;
  `pyfunc_model` is the model class it serves; `checkpoint_registry`: `orchestrator register`.
"""
