"""A multi-node Ray cluster and an MLflow server on loopback, started and stopped by process id.

Each Ray node is one `ray start --block` process in its own session, with its own temp dir and
its own loopback address (head 127.0.0.10, workers 127.0.0.2, 127.0.0.3, ...), so Ray's results
tell the nodes apart by `node_ip`. Nothing here touches another Ray instance on the machine: no
global `ray stop`; every process we signal is one we started or a descendant of one (checked by
start time, against pid reuse).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def process_tree(root: int) -> dict[int, int]:
    """`root` and all its live descendants, as {pid: start time}."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
                starts[int(entry)] = stat[1]
    tree: dict[int, int] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in starts and pid not in tree:
            tree[pid] = starts[pid]
            todo.extend(children.get(pid, []))
    return tree


def signal_processes(processes: Mapping[int, int], sig: int) -> None:
    """Send `sig` to each {pid: start time} that is still the same process."""
    for pid, start in processes.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == start:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def wait_gone(processes: Mapping[int, int], timeout: float) -> bool:
    """Wait until none of {pid: start time} is alive (zombies count as gone); True if so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [
            pid
            for pid, start in processes.items()
            if (stat := _proc_stat(pid)) is not None and stat[1] == start and not _zombie(pid)
        ]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] == "Z"


def stop_tree(process: subprocess.Popen, *, grace_s: float = 5.0) -> None:
    """SIGTERM a process we started and all its descendants, then SIGKILL what is left."""
    tree = process_tree(process.pid)
    signal_processes(tree, signal.SIGTERM)
    if not wait_gone(tree, grace_s):
        # Descendants started meanwhile are caught by taking the tree again.
        tree.update(process_tree(process.pid))
        signal_processes(tree, signal.SIGKILL)
        wait_gone(tree, grace_s)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class RayNode:
    """One `ray start --block` process and where it writes."""

    name: str
    ip: str
    temp_dir: Path
    log: Path
    process: subprocess.Popen
    killed: bool = False

    def raylet_pid(self) -> int | None:
        for pid in process_tree(self.process.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except OSError:
                continue
        return None


@dataclass
class LoopbackRayCluster:
    """A Ray head and worker nodes on 127.0.0.x of this machine, with token authentication on."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    # Not 127.0.0.1: Ray rewrites that to the machine's external address.
    head_ip: str = "127.0.0.10"
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    @classmethod
    def create(
        cls, root: Path, *, extra_env: Mapping[str, str] | None = None
    ) -> LoopbackRayCluster:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))
        }
        env.update(
            # A fresh token for this cluster only, passed by environment (never on a command line).
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_USAGE_STATS_ENABLED="0",
            # Notice a dead node within a few seconds instead of ~30 s.
            RAY_health_check_period_ms="1000",
            RAY_health_check_timeout_ms="1000",
            RAY_health_check_failure_threshold="3",
            **(extra_env or {}),
        )
        return cls(root=root, env=env)

    def _start(self, name: str, ip: str, args: list[str], num_cpus: int) -> RayNode:
        # Unix socket paths must stay under ~100 characters: keep the temp dir short.
        temp_dir = Path(tempfile.mkdtemp(prefix=f"rc-{name}-", dir="/tmp"))
        log = self.root / f"ray-{name}.log"
        command = [
            RAY,
            "start",
            "--block",
            "--disable-usage-stats",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--node-ip-address={ip}",
            f"--temp-dir={temp_dir}",
            f"--object-store-memory={200 * 1024**2}",
            *args,
        ]
        with log.open("w") as out:
            process = subprocess.Popen(
                command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        node = RayNode(name=name, ip=ip, temp_dir=temp_dir, log=log, process=process)
        self.nodes.append(node)
        return node

    def start_head(self, *, num_cpus: int = 1, timeout: float = 60.0) -> RayNode:
        self.port = free_port()
        head = self._start(
            "head",
            self.head_ip,
            [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
            ],
            num_cpus,
        )
        self.wait_for_nodes(1, timeout=timeout)
        return head

    def start_nodes(self, worker_ips: Sequence[str], *, num_cpus: int = 1) -> None:
        """A head and a worker per ip, `num_cpus` each, all alive before it returns."""
        self.start_head(num_cpus=num_cpus)
        for ip in worker_ips:
            self.add_worker(ip, num_cpus=num_cpus)
        self.wait_for_nodes(1 + len(worker_ips))

    def add_worker(self, ip: str, *, num_cpus: int = 1) -> RayNode:
        return self._start(f"w{len(self.nodes)}", ip, [f"--address={self.address}"], num_cpus)

    def alive_node_ips(self) -> list[str]:
        """IPs of the nodes the head's GCS reports alive (asked from a short-lived process)."""
        code = (
            "import ray, json\n"
            "from ray._raylet import GcsClient\n"
            f"c = GcsClient(address={self.address!r})\n"
            "print(json.dumps(sorted(i.node_manager_address for i in "
            "c.get_all_node_info(timeout=10).values() if i.state == 0)))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            return []
        import json

        return list(json.loads(out.stdout.strip().splitlines()[-1]))

    def wait_for_nodes(self, count: int, *, timeout: float = 90.0) -> list[str]:
        """Wait until `count` nodes are alive; raises with the nodes' log tails if they are not."""
        deadline = time.monotonic() + timeout
        ips: list[str] = []
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None and not node.killed:
                    raise RuntimeError(f"ray node {node.name} exited:\n{self.log_tail(node)}")
            ips = self.alive_node_ips()
            if len(ips) == count:
                return ips
            time.sleep(0.5)
        tails = "\n".join(self.log_tail(n) for n in self.nodes)
        raise RuntimeError(f"{len(ips)} of {count} ray nodes alive after {timeout:.0f} s\n{tails}")

    def kill_node(self, node: RayNode) -> None:
        """Kill a node the hard way: SIGKILL its raylet, then everything else of that node."""
        tree = process_tree(node.process.pid)
        raylet = node.raylet_pid()
        node.killed = True
        if raylet is not None:
            signal_processes({raylet: tree[raylet]}, signal.SIGKILL)
        signal_processes(tree, signal.SIGKILL)
        wait_gone(tree, 10.0)
        node.process.wait(timeout=10)

    def log_files(self) -> list[Path]:
        """Every file the nodes logged to: `ray start` output and Ray's session logs."""
        files = [node.log for node in self.nodes]
        for node in self.nodes:
            files += [p for p in node.temp_dir.glob("session_*/logs/**/*") if p.is_file()]
        return files

    def log_tail(self, node: RayNode, lines: int = 20) -> str:
        text = node.log.read_text(errors="replace") if node.log.is_file() else ""
        return f"--- {node.name} ({node.log})\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop every node we started, workers first, by process id; remove their temp dirs."""
        import shutil

        for node in reversed(self.nodes):
            if node.process.poll() is None:
                stop_tree(node.process)
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)


@dataclass
class MlflowServer:
    """`orchestrator tracking-server` on 127.0.0.1 with a free port, run as a child process."""

    process: subprocess.Popen
    url: str
    log: Path

    @classmethod
    def launch(
        cls, root: Path, *, repo: Path, backend_store_uri: str | None = None
    ) -> MlflowServer:
        """Start the server in the background (runs in `backend_store_uri`, default a SQLite
        file in `root`); `wait_ready` before using it."""
        port = free_port()
        store = backend_store_uri or f"sqlite:///{root / 'mlflow-server.db'}"
        log = root / "mlflow-server.log"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["PYTHONPATH"] = str(repo)
        command = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "tracking-server",
            "--port",
            str(port),
            "--backend-store-uri",
            store,
            "--artifacts-destination",
            str(root / "mlflow-artifacts"),
            "--workers",
            "1",
        ]
        with log.open("w") as out:
            process = subprocess.Popen(
                command,
                cwd=repo,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(process=process, url=f"http://127.0.0.1:{port}", log=log)

    @property
    def artifacts_dir(self) -> Path:
        return self.log.parent / "mlflow-artifacts"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        tail = self.log.read_text()[-3000:]
        raise RuntimeError(f"mlflow server not up after {timeout:.0f} s:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_tree(self.process)
