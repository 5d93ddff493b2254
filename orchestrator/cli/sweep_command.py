"""What `orchestrator sweep` runs for a plain sweep (not a study): a new or resumed sweep
(`sweep.run_sweep`), an extension (`--extend N`, `sweep_extend.extend_sweep`), or with
`--resume` the sweep's last extension when that did not finish."""

from __future__ import annotations

from pathlib import Path

from orchestrator.space.schema import SearchSpace
from orchestrator.sweep.driver import run_sweep
from orchestrator.sweep.extend import extend_sweep, extension_lines, pending_extension


def sweep_command_lines(
    space: SearchSpace,
    extend: int | None,
    data_dir: Path,
    results_dir: Path,
    address: str | None,
    resume: bool,
) -> list[str]:
    """Run the sweep `space` as the flags ask and return what the command prints."""
    if extend is not None or (resume and pending_extension(results_dir, space.name)):
        outcome = extend_sweep(
            space, extend, data_dir=data_dir, results_dir=results_dir, address=address
        )
        return extension_lines(outcome, space, extend)
    return run_sweep(
        space, data_dir=data_dir, results_dir=results_dir, address=address, resume=resume
    ).summary()
