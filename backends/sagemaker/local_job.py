"""Run a ``CreateTrainingJob`` request on this machine the way SageMaker runs it — through the training container's
own toolkit, without Docker.

For every instance of the request (``ResourceConfig.InstanceCount``) the runner writes what the SageMaker platform
writes into a training container, in a folder standing in for ``/opt/ml``, and starts the container's entry point,
the SageMaker Training Toolkit's ``train`` with ``SAGEMAKER_TRAINING_MODULE=sagemaker_pytorch_container.training:main``
(the PyTorch container's ENV), ``SAGEMAKER_BASE_DIR`` pointing at that folder::

    <job_dir>/
      request.json                         the request, as given
      logs/algo-N.log                      everything that instance printed (SageMaker: CloudWatch)
      algo-N/                              = /opt/ml of instance N
        input/config/hyperparameters.json  the request's HyperParameters as sent (JSON strings); only
                                           sagemaker_submit_directory is pointed at the local source tarball
        input/config/inputdataconfig.json  one entry per channel
        input/config/resourceconfig.json   current_host, hosts, instance groups, network interface ``lo``
        input/config/checkpointconfig.json CheckpointConfig (neither toolkit reads it; written for fidelity)
        input/data/<channel>/              the channel's files (hard links)
        code/                              empty: the toolkit unpacks the source tarball here and pip-installs
                                           its requirements.txt, then runs the entry point
        model/ output/ output/data/        the script's outputs; output/success or output/failure
        checkpoints/                       CheckpointConfig.LocalPath: KEPT between runs of the same job, as the
                                           platform restores it from S3, so a rerun resumes

What the toolkit does not do, and SageMaker does, the runner does: apply the request's ``MetricDefinitions``
regexes to the log, enforce ``StoppingCondition.MaxRuntimeInSeconds`` (status ``Stopped``), stop every instance
when one fails, and report ``output/failure`` (its first 1024 characters) as the FailureReason.

Several instances: hosts are named ``127.0.0.1``, ``127.0.0.2``, … (loopback addresses resolve without an
/etc/hosts entry; SageMaker's ``algo-N`` would not), and the PyTorch toolkit then launches torchrun on each with
``--master_addr 127.0.0.1 --master_port 7777`` — a port it fixes, so only one such job runs on a machine at a time
(a lock file guards it). torchrun starts each rank in a session of its own, out of reach of a process-group
signal, so every process of a job carries ``SENTIFLOW_TRAINING_JOB_DIR`` in its environment and the runner kills
whatever still carries it before and after every run (failure, timeout, cancellation included).

The job's processes see the request's ``Environment``, the toolkit's switches and a small allow-list of this
machine's variables (``PATH``, ``HOME``, locale, pip and proxy settings) — not the caller's whole environment, as a
container would not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import SentiflowError
from core.io import file_lock

Log = Callable[[str], None]
OPT_ML = "/opt/ml"
JOB_MARKER = "SENTIFLOW_TRAINING_JOB_DIR"  # inherited by every process of a job, torchrun's ranks included
TRAINING_MODULE = "sagemaker_pytorch_container.training:main"  # the PyTorch training container's ENV
TOOLKIT_INSTALL = "pip install sagemaker-training==5.1.4 sagemaker-pytorch-training==3.0.0 (needs gcc)"
FAILURE_REASON_LIMIT = 1024  # DescribeTrainingJob returns the first 1024 characters of output/failure
DISTRIBUTED_PORT = 7777  # sagemaker_pytorch_container/training.py MASTER_PORT: torchrun's rendezvous across hosts
NETWORK_INTERFACE = "lo"
STOP_GRACE_S = 10.0
ENV_ALLOWED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NLTK_DATA",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)
ENV_ALLOWED_PREFIXES = ("LC_", "PIP_", "UV_")
# The toolkit's "Invoking user script" block: the whole training environment, then every SM_* variable. Kept in
# the log file; not repeated line by line to the caller.
_BANNER_START = "Training Env:"
_BANNER_END = "Invoking script with the following command:"
_KILLED = re.compile(r"SIGKILL|Signal 9\b|ExitCode (?:137|-9)\b|exitcode\s*:\s*-9\b")
_PORT_LOCK = Path(tempfile.gettempdir()) / f"sentiflow-sagemaker-port-{DISTRIBUTED_PORT}.lock"


@dataclass
class HostRun:
    """One instance of the job."""

    host: str
    base_dir: Path
    log_path: Path
    exit_code: int | None = None
    failure: str | None = None  # <base>/output/failure, when written
    success: bool = False  # <base>/output/success exists


@dataclass
class LocalJobResult:
    job_name: str
    job_dir: Path
    status: str  # "Completed" | "Failed" | "Stopped" (MaxRuntimeInSeconds reached), as DescribeTrainingJob says
    secondary_status: str  # "Completed" | "Failed" | "MaxRuntimeExceeded"
    failure_reason: str | None
    model_dir: Path  # algo-1's /opt/ml/model: rank 0 writes the model
    output_data_dir: Path
    hosts: list[HostRun]
    seconds: float
    metrics: dict[str, list[float]] = field(default_factory=dict)  # MetricDefinitions name -> values, in order
    interrupted: bool = False  # processes died without the script reporting an error (killed, out of memory)

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last value of each metric (SageMaker's ``FinalMetricDataList``)."""
        return {name: values[-1] for name, values in self.metrics.items() if values}

    @property
    def log_path(self) -> Path:
        return self.hosts[0].log_path


# --- the /opt/ml folder, from the request ------------------------------------------------------------------------


def host_names(count: int) -> list[str]:
    """SageMaker's ``algo-1`` for one instance; loopback addresses for several (they resolve to this machine)."""
    return ["algo-1"] if count == 1 else [f"127.0.0.{i + 1}" for i in range(count)]


def resource_config(request: dict[str, Any], hosts: list[str], current: str) -> dict[str, Any]:
    """``resourceconfig.json`` as the platform writes it for a homogeneous cluster."""
    instance_type = request["ResourceConfig"]["InstanceType"]
    return {
        "current_host": current,
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": list(hosts),
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": instance_type, "hosts": list(hosts)}
        ],
        "network_interface_name": NETWORK_INTERFACE,
    }


def input_data_config(request: dict[str, Any]) -> dict[str, Any]:
    """``inputdataconfig.json``: one entry per channel of ``InputDataConfig``."""
    default_mode = request.get("AlgorithmSpecification", {}).get("TrainingInputMode", "File")
    config: dict[str, Any] = {}
    for channel in request.get("InputDataConfig", []):
        s3 = channel.get("DataSource", {}).get("S3DataSource", {})
        entry = {
            "TrainingInputMode": channel.get("InputMode", default_mode),
            "S3DistributionType": s3.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
        }
        if "ContentType" in channel:
            entry["ContentType"] = channel["ContentType"]
        config[channel["ChannelName"]] = entry
    return config


def host_path(container_path: str, base: Path) -> Path:
    """Where a container path under ``/opt/ml`` lives in the host folder ``base``."""
    if container_path != OPT_ML and not container_path.startswith(OPT_ML + "/"):
        raise SentiflowError(f"container path {container_path!r} is not under {OPT_ML}; the local twin maps only that")
    return base / container_path[len(OPT_ML) :].lstrip("/")


def _stage_channel(source: Path, dest: Path, distribution: str, host_index: int, host_count: int) -> None:
    """The channel's files into ``dest``: all of them (FullyReplicated) or every N-th by key (ShardedByS3Key)."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if distribution == "ShardedByS3Key":
        files = files[host_index::host_count]
    dest.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)  # instant; the script only reads its input
        except OSError:
            shutil.copy2(path, target)


def prepare_host(
    request: dict[str, Any],
    base: Path,
    hosts: list[str],
    host: str,
    channels: dict[str, Path],
    source_tarball: Path,
) -> None:
    """Fresh ``input/``, ``code/``, ``model/``, ``output/`` for ``host``; ``checkpoints/`` is kept (a rerun resumes)."""
    for name in ("input", "code", "model", "output"):
        shutil.rmtree(base / name, ignore_errors=True)
    config_dir = base / "input" / "config"
    config_dir.mkdir(parents=True)
    hyperparameters = dict(request.get("HyperParameters", {}))
    # S3 (or wherever the request points) is replaced by the local tarball; the toolkit extracts either alike
    hyperparameters["sagemaker_submit_directory"] = json.dumps(str(source_tarball))
    (config_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2))
    data_config = input_data_config(request)
    (config_dir / "inputdataconfig.json").write_text(json.dumps(data_config, indent=2))
    (config_dir / "resourceconfig.json").write_text(json.dumps(resource_config(request, hosts, host), indent=2))
    checkpoint = request.get("CheckpointConfig")
    if checkpoint:
        local = checkpoint.get("LocalPath", OPT_ML + "/checkpoints")
        host_path(local, base).mkdir(parents=True, exist_ok=True)
        (config_dir / "checkpointconfig.json").write_text(
            json.dumps({"LocalPath": local, "S3Uri": checkpoint.get("S3Uri", "")}, indent=2)
        )
    for name, entry in data_config.items():
        _stage_channel(
            channels[name], base / "input" / "data" / name, entry["S3DistributionType"], hosts.index(host), len(hosts)
        )
    for name in ("model", "output/data", "code"):
        (base / name).mkdir(parents=True, exist_ok=True)


def toolkit_environment(request: dict[str, Any], base: Path, job_dir: Path) -> dict[str, str]:
    """The environment of the container's entry point: an allow-list of ours, the request's ``Environment``
    (``/opt/ml`` mapped to ``base``), what the platform sets and the toolkit's switches."""
    env = {
        key: value for key, value in os.environ.items() if key in ENV_ALLOWED or key.startswith(ENV_ALLOWED_PREFIXES)
    }
    for key, value in request.get("Environment", {}).items():
        env[key] = value.replace(OPT_ML, str(base))
    name = request["TrainingJobName"]
    env.update(
        TRAINING_JOB_NAME=name,
        TRAINING_JOB_ARN=f"arn:aws:sagemaker:local:000000000000:training-job/{name.lower()}",
        SAGEMAKER_TRAINING_MODULE=TRAINING_MODULE,
        SAGEMAKER_BASE_DIR=str(base),
        SM_STUDIO_LOCAL_MODE="true",  # skips the toolkit's DNS wait (up to 15 minutes) for every host name
        PYTHONUNBUFFERED="1",
    )
    # `train`, the python it runs and torchrun (started by name) must come from this environment
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", os.defpath)
    env[JOB_MARKER] = str(job_dir)
    return env


def toolkit_entry() -> Path:
    """The toolkit's ``train`` console script next to this interpreter; SentiflowError when it is not installed."""
    train = Path(sys.executable).parent / "train"
    if not train.is_file():
        raise SentiflowError(
            f"the SageMaker training toolkit is not installed in this environment ({train} not found), and the "
            f"local backend trains through it: {TOOLKIT_INSTALL}, or `make venv`"
        )
    return train


# --- metrics -------------------------------------------------------------------------------------------------


class MetricParser:
    """SageMaker's metric extraction: each ``MetricDefinitions`` regex against every log line, first group a float."""

    def __init__(self, definitions: list[dict[str, str]]) -> None:
        self.patterns = [(item["Name"], re.compile(item["Regex"])) for item in definitions]
        self.values: dict[str, list[float]] = {name: [] for name, _ in self.patterns}

    def feed(self, line: str) -> None:
        for name, pattern in self.patterns:
            match = pattern.search(line)
            if match is None:
                continue
            with contextlib.suppress(ValueError, IndexError):
                self.values[name].append(float(match.group(1)))


# --- the job's processes ---------------------------------------------------------------------------------------


def job_processes(job_dir: Path) -> list[Any]:
    """Every live process of this job: those whose environment carries its marker (``psutil.Process`` list)."""
    import psutil

    marker, found = str(job_dir), []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(JOB_MARKER) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue
    return found


def reap(job_dir: Path, log: Log | None = None) -> int:
    """SIGKILL every process still carrying the job's marker (e.g. ranks a killed toolkit left behind); how many."""
    import psutil

    leftovers = job_processes(job_dir)
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()  # psutil checks the create time first: a reused pid is never signalled
    psutil.wait_procs(leftovers, timeout=10)
    if leftovers and log is not None:
        log(f"stopped {len(leftovers)} leftover process(es) of training job folder {job_dir}")
    return len(leftovers)


def _stop_group(process: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the instance's process group (toolkit, torchrun — which forwards it to its ranks), SIGKILL after
    ``grace`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def job_lock(job_dir: Path) -> Iterator[None]:
    """One run of a job at a time: a second run of the same job would reap the first one's processes and reuse its
    folders. The lock (``<job_dir>/.lock``) dies with its holder, so a crashed run never blocks the next."""

    def busy(holder: str) -> SentiflowError:
        return SentiflowError(
            f"training job folder {job_dir} is in use by a run of the same job ({holder}); wait for it to "
            "finish (a second run would stop it)"
        )

    with file_lock(job_dir / ".lock", "the training job folder", busy=busy):
        yield


@contextlib.contextmanager
def distributed_slot(count: int) -> Iterator[None]:
    """For a multi-instance job: this machine's one slot for torchrun's fixed port 7777 (a lock file), and the
    port free. One instance needs no slot."""
    if count <= 1:
        yield
        return

    def busy(holder: str) -> SentiflowError:
        return SentiflowError(
            f"another multi-instance local training job is running ({holder}); SageMaker's PyTorch toolkit "
            f"fixes torchrun's port to {DISTRIBUTED_PORT}, so one such job runs at a time on a machine: wait for "
            "it, or train with SENTIFLOW_TRAIN_INSTANCE_COUNT=1"
        )

    with file_lock(_PORT_LOCK, "the multi-instance training slot", busy=busy):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", DISTRIBUTED_PORT))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                raise SentiflowError(
                    f"port {DISTRIBUTED_PORT} on 127.0.0.1 is in use by another program; a multi-instance training "
                    "job needs it for torchrun (SageMaker's PyTorch toolkit fixes it): free it, or train with "
                    "SENTIFLOW_TRAIN_INSTANCE_COUNT=1"
                ) from error
        yield


# --- running it ----------------------------------------------------------------------------------------------


def _pump(stream: IO[str], label: str, lines: queue.Queue, log_file: IO[str]) -> None:
    """Copy an instance's output into its log file and hand the lines to the caller's thread."""
    for raw in stream:
        log_file.write(raw)
        log_file.flush()
        lines.put((label, raw.rstrip("\n")))
    lines.put((label, None))


class _Relay:
    """Passes lines on to ``log`` in the caller's thread: empty lines and the toolkit's environment dump dropped,
    ``[algo-N]`` prefixed when there are several instances; every line goes through the metric regexes."""

    def __init__(self, log: Log, parser: MetricParser, several: bool) -> None:
        self.log, self.parser, self.several = log, parser, several
        self.in_banner: dict[str, bool] = {}

    def __call__(self, host: str, line: str) -> None:
        if not line.strip():
            return
        if line.strip() == _BANNER_START:
            self.in_banner[host] = True
        if self.in_banner.get(host):
            if line.strip() != _BANNER_END:
                return
            self.in_banner[host] = False
        self.parser.feed(line)
        self.log(f"[{host}] {line}" if self.several else line)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def run_local_job(
    request: dict[str, Any],
    channels: dict[str, Path | str],
    job_dir: Path | str,
    source_tarball: Path | str,
    log: Log = print,
    on_start: Callable[[list[subprocess.Popen]], None] | None = None,
) -> LocalJobResult:
    """Run ``request`` here through the SageMaker training toolkit; ``channels`` maps each channel of the request's
    ``InputDataConfig`` to a local folder holding its files (what SageMaker downloads from its S3 URI).

    Lines reach ``log`` in this thread as the instances print them. Interrupting (Ctrl-C, a cancelled flow run)
    stops every process of the job before the exception propagates."""
    job_dir = Path(job_dir).resolve()
    data_config = input_data_config(request)
    local_channels = {name: Path(folder).resolve() for name, folder in channels.items()}
    missing = sorted(set(data_config) - set(local_channels))
    absent = sorted(name for name in data_config if name in local_channels and not local_channels[name].is_dir())
    if missing or absent:
        raise SentiflowError(
            f"training job {request['TrainingJobName']}: no local folder for channel(s) "
            f"{', '.join(missing + absent)} of the request; rerun the data stages"
        )
    entry = toolkit_entry()
    count = int(request["ResourceConfig"].get("InstanceCount", 1))
    tarball = Path(source_tarball).resolve()
    with job_lock(job_dir), distributed_slot(count):
        return _run(request, job_dir, local_channels, tarball, entry, count, log, on_start)


def _run(
    request: dict[str, Any],
    job_dir: Path,
    local_channels: dict[str, Path],
    tarball: Path,
    entry: Path,
    count: int,
    log: Log,
    on_start: Callable[[list[subprocess.Popen]], None] | None,
) -> LocalJobResult:
    """The body of :func:`run_local_job`, under its locks."""
    started = time.monotonic()
    hosts = host_names(count)
    (job_dir / "request.json").write_text(json.dumps(request, indent=2, default=str))
    (job_dir / "logs").mkdir(exist_ok=True)
    runs = [
        HostRun(host=host, base_dir=job_dir / f"algo-{i + 1}", log_path=job_dir / "logs" / f"algo-{i + 1}.log")
        for i, host in enumerate(hosts)
    ]
    for stale in job_dir.glob("algo-*"):  # fewer instances than last time: drop the extra hosts' folders
        if stale.is_dir() and stale.name not in {run.base_dir.name for run in runs}:
            shutil.rmtree(stale)
    max_runtime = request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
    parser = MetricParser(request.get("AlgorithmSpecification", {}).get("MetricDefinitions", []))
    relay = _Relay(log, parser, several=count > 1)
    lines: queue.Queue = queue.Queue()
    processes: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    log_files: list[IO[str]] = []
    timed_out, first_failed = False, None

    def drain(wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                host, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if line is not None:
                relay(host, line)

    reap(job_dir, log)  # a previous run's orphans must not write into the folders about to be reused
    try:
        for run in runs:
            prepare_host(request, run.base_dir, hosts, run.host, local_channels, tarball)
        for run in runs:
            log_file = open(run.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
            log_files.append(log_file)
            process = subprocess.Popen(
                [str(entry)],
                cwd=run.base_dir,
                env=toolkit_environment(request, run.base_dir, job_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                errors="replace",
                start_new_session=True,  # its own process group: a stop reaches the toolkit and torchrun
            )
            processes.append(process)
            assert process.stdout is not None
            label = run.base_dir.name  # algo-N, as SageMaker names the instance's log stream
            pump = threading.Thread(target=_pump, args=(process.stdout, label, lines, log_file), daemon=True)
            pump.start()
            pumps.append(pump)
        if on_start is not None:
            on_start(list(processes))
        deadline = None if max_runtime is None else started + float(max_runtime)
        while any(p.poll() is None for p in processes):
            drain(0.2)
            failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
            timed_out = deadline is not None and time.monotonic() > deadline
            if failed or timed_out:  # SageMaker fails (or stops) the job as a whole
                first_failed = failed[0] if failed else None
                for process in processes:
                    _stop_group(process)
                break
    except BaseException:  # Ctrl-C, cancellation, a broken callback: leave no toolkit or rank behind
        for process in processes:
            _stop_group(process, grace=5)
        raise
    finally:
        for process in processes:
            if process.poll() is None:
                _stop_group(process, grace=5)
        reap(job_dir, log)  # ranks in sessions of their own; their pipes close with them
        for pump in pumps:
            pump.join(timeout=10)
        with contextlib.suppress(Exception):
            drain(0)
        for log_file in log_files:
            log_file.close()
    for run, process in zip(runs, processes, strict=True):
        run.exit_code = process.wait()
        run.failure = _read(run.base_dir / "output" / "failure")
        run.success = (run.base_dir / "output" / "success").is_file()
    if first_failed is None:
        first_failed = next((i for i, run in enumerate(runs) if run.exit_code != 0), None)
    ok = not timed_out and all(run.exit_code == 0 and run.success for run in runs)
    reason, interrupted = None, False
    if timed_out:
        reason = f"MaxRuntimeExceeded: the job reached its stopping condition of {max_runtime} s and was stopped"
    elif not ok:
        culprit = runs[first_failed if first_failed is not None else 0]
        failure = culprit.failure or next((run.failure for run in runs if run.failure), None)
        if failure:
            reason = failure[:FAILURE_REASON_LIMIT]
        else:
            reason = (
                f"AlgorithmError: the toolkit on {culprit.host} exited with code {culprit.exit_code} "
                "and wrote no output/failure"
            )
        interrupted = (culprit.exit_code or 0) < 0 or culprit.failure is None or bool(_KILLED.search(reason))
    status = "Stopped" if timed_out else ("Completed" if ok else "Failed")
    return LocalJobResult(
        job_name=request["TrainingJobName"],
        job_dir=job_dir,
        status=status,
        secondary_status="MaxRuntimeExceeded" if timed_out else status,
        failure_reason=reason,
        model_dir=runs[0].base_dir / "model",
        output_data_dir=runs[0].base_dir / "output" / "data",
        hosts=runs,
        seconds=time.monotonic() - started,
        metrics=parser.values,
        interrupted=interrupted,
    )
