"""One Lambda execution environment: a real runtime-client process and its own Runtime API.

``Environment`` starts ``python -m awslambdaric <handler>`` (the runtime client AWS ships) with
``AWS_LAMBDA_RUNTIME_API`` pointing at a Runtime API server of its own on 127.0.0.1 (a port
chosen at run time): ``GET /2018-06-01/runtime/invocation/next`` hands over at most one
``Invocation`` at a time, ``POST .../invocation/{id}/response`` and ``.../error`` complete it,
``POST /2018-06-01/runtime/init/error`` reports a failed Init. The first ``next`` call marks the
end of Init (``init_ms`` = process start to that call). A POST body is read strictly
(``http_body``, limit ``MAX_PAYLOAD_BYTES``): a refusal answers ``{"errorType": reason}`` with
its status (400, 411, 413) and closes the connection.

Isolation: with ``FunctionConfig.isolated`` the interpreter runs with ``-S``; ``sys.path`` holds
the package directory (also the working directory, Lambda's /var/task), then a runtime directory
with only the runtime client (``runtime_dir``, Lambda's /var/runtime), then the standard
library. The process gets Lambda's environment variables and nothing of this process's
environment (no credentials). ``kill`` ends the process group and the server.

Shaping: given a cgroup backend, the environment gets a group of its own shaped as Lambda
shapes an environment of its memory size (``lambda_shape``: ``memory_mb / 1769`` CPUs of quota,
Lambda's visible cores, a memory limit of ``memory_mb``); the process joins it before the
interpreter runs (``Group.launch_argv``), and ``kill`` removes it after the process has ended,
keeping its last reading (``cpu_stat``, ``max_memory_mb``). A process the kernel killed for
memory (the group's OOM kill count went up, or a SIGKILL this module did not send while the
group was at its limit) makes ``oom`` true: its invocation fails with ``Runtime.OutOfMemory``
and the message Lambda gives (``Runtime exited with error: signal: killed``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from deployers import ownership
from deployers.standins.http_body import Refused, linger_close, read_body
from deployers.standins.lambda_shape import group_name, lambda_shape
from deployers.standins.shaping import Backend, CpuStat, Group, ShapingError, machine_cores

INIT_TIMEOUT_S = 10.0  # Lambda's limit on the Init phase
ACCOUNT = "123456789012"
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous request and response payload limit
RUNTIME_MODULES = ("awslambdaric", "simplejson", "snapshot_restore_py", "runtime_client")
OUT_OF_MEMORY = "Runtime.OutOfMemory"
EXIT_ERROR = "Runtime.ExitError"

log = logging.getLogger(__name__)
T = TypeVar("T")


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that stays silent when a killed peer drops its connection."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)



@dataclass(frozen=True)
class FunctionConfig:
    """One function as the local runtime hosts it."""

    name: str
    code_dir: Path  # the unzipped package (Lambda's /var/task)
    handler: str = "lambda_handler.handler"
    memory_mb: int = 128
    timeout_s: float = 3.0
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    runtime: str = "python3.11"
    aliases: Mapping[str, str] = field(default_factory=dict)  # alias -> version
    environment: Mapping[str, str] = field(default_factory=dict)
    isolated: bool = True  # False: the venv's packages are visible (the torch image handler)



class Invocation:
    def __init__(self, payload: bytes, fn: FunctionConfig) -> None:
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.fn = fn
        self.done = threading.Event()
        self.delivered = threading.Event()
        self.started = 0.0
        self.finished = 0.0
        self.body = b""
        self.error_type: str | None = None


class Environment:
    """One execution environment: a runtime-client process and its Runtime API server."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, fn: FunctionConfig, runtime_dir: Path, provisioned: bool,
                 backend: Backend | None = None) -> None:
        self.id = next(self._ids)
        self.fn = fn
        self.provisioned = provisioned
        self.cond = threading.Condition()
        self.ready = threading.Event()  # first GET /next: Init is over
        self.ended = threading.Event()  # init error, exit or kill
        self.init_error: bytes | None = None
        self.slot: Invocation | None = None
        self.init_ms: float | None = None
        self.init_reported = provisioned  # provisioned Init is never an invocation's
        self.log: list[str] = []
        self.oom = False  # the kernel killed the process for memory
        self._killing = False  # kill() sent the SIGKILL
        self._exited = threading.Event()  # the process ended and its exit was classified
        self._group_lock = threading.Lock()
        self._final: tuple[CpuStat, int | None] | None = None  # the removed group's last reading
        self.group: Group | None = None
        self.server = QuietServer(("127.0.0.1", 0), runtime_api(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        code = str(Path(fn.code_dir).resolve())
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1", "LAMBDA_TASK_ROOT": code, "_HANDLER": fn.handler,
            "LAMBDA_RUNTIME_DIR": str(runtime_dir), "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{uuid.uuid4().hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE":
                "provisioned-concurrency" if provisioned else "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "PYTHONPATH": f"{code}:{runtime_dir}" if fn.isolated else code,
            **fn.environment,
        }
        cmd = [sys.executable, *(["-S"] if fn.isolated else []), "-m", "awslambdaric", fn.handler]
        try:
            if backend is not None:
                self.group = backend.create(group_name(fn.name, self.id),
                                            lambda_shape(fn.memory_mb, machine_cores()))
                cmd = self.group.launch_argv(cmd)  # joins the group, then execs: same pid
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(cmd, cwd=code,
                                         env=ownership.mark(env, "lambda-environment", fn.name),
                                         stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except BaseException:
            self.server.shutdown()
            self.server.server_close()
            if self.group is not None:
                self.group.remove(wait_s=0)
            raise
        threading.Thread(target=self._read_logs, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read_logs(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.log.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _watch(self) -> None:
        self.proc.wait()
        self.oom = self._killed_for_memory()
        self._exited.set()
        self.ended.set()
        with self.cond:
            if self.slot is not None and not self.slot.done.is_set():
                self.slot.error_type, self.slot.body = self.exit_error(self.slot.request_id)
                self.slot.finished = time.perf_counter()
                self.slot.started = self.slot.started or self.slot.finished
                self.slot.done.set()
                self.slot.delivered.set()
            self.cond.notify_all()

    def _killed_for_memory(self) -> bool:
        if self.group is None:
            return False
        try:
            if self.group.oom_kills() > 0:
                return True
            peak = self.group.memory_peak_mb() or 0
        except OSError:
            return False
        return (not self._killing and self.proc.returncode == -signal.SIGKILL
                and peak >= self.fn.memory_mb)

    def exit_error(self, request_id: str) -> tuple[str, bytes]:
        """The error type and payload Lambda answers when the runtime process has exited:
        ``Runtime.OutOfMemory`` when the kernel killed it for memory, else
        ``Runtime.ExitError`` with its exit status or signal."""
        code = self.proc.returncode
        if self.oom:
            kind, how = OUT_OF_MEMORY, "signal: killed"
        elif code is not None and code < 0:
            kind, how = EXIT_ERROR, f"signal: {(signal.strsignal(-code) or str(-code)).lower()}"
        else:
            kind, how = EXIT_ERROR, f"exit status {code}"
        return kind, json.dumps({
            "errorType": kind,
            "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {how}",
        }).encode()

    def max_memory_mb(self) -> int:
        """Peak memory of the environment, in MB: its group's peak when shaped (the removed
        group's last reading after ``kill``), else the process's peak resident set (VmHWM).
        The group is charged for the pages it brought in: shared libraries already in this
        machine's page cache count in VmHWM but not here, where on Lambda (a fresh microVM
        per environment) they count; files it read count here but not in VmHWM."""
        if self.group is not None:
            with self._group_lock:
                peak = self._final[1] if self._final else self._read(self.group.memory_peak_mb)
            if peak is not None:
                return peak
        return self.peak_rss_mb() or 0

    def peak_rss_mb(self) -> int | None:
        """The process's peak resident set (VmHWM) in MB; ``None`` once it has ended."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return math.ceil(int(line.split()[1]) / 1024)
        except OSError:
            pass
        return None

    def cpu_stat(self) -> CpuStat | None:
        """CPU the environment's group used so far (its last reading once removed); ``None``
        when unshaped."""
        if self.group is None:
            return None
        with self._group_lock:
            return self._final[0] if self._final else self._read(self.group.stat)

    @staticmethod
    def _read(reading: Callable[[], T]) -> T | None:
        try:
            return reading()
        except OSError:  # removed under us: a reading is never worth a crash
            return None

    def kill(self) -> None:
        """End the process group and the Runtime API server, then remove the cgroup (keeping
        its last reading); idempotent."""
        if self.proc.poll() is None:
            self._killing = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._exited.wait(5.0)  # the watcher reads the group to classify the exit
        self.ended.set()
        self.server.shutdown()
        self.server.server_close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.group is not None:
            self._remove_group(self.group)

    def _remove_group(self, group: Group) -> None:
        with self._group_lock:
            if self._final is not None:
                return
            stat = self._read(group.stat) or CpuStat(0, 0, 0.0, 0.0)
            self._final = (stat, self._read(group.memory_peak_mb))
            try:
                group.remove()
            except ShapingError as exc:
                log.warning("environment %s of %s: %s", self.id, self.fn.name, exc)


def runtime_api(env: Environment) -> type[BaseHTTPRequestHandler]:
    prefix = "/2018-06-01/runtime"

    class RuntimeAPI(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes = b'{"status":"OK"}',
                   headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != f"{prefix}/invocation/next":
                return self._reply(404, b'{"errorType":"NotFound"}')
            if not env.ready.is_set():
                env.init_ms = (time.perf_counter() - env.started) * 1000
                env.ready.set()
            with env.cond:
                while not env.ended.is_set() and (env.slot is None or env.slot.started):
                    env.cond.wait()
                if env.ended.is_set() or env.slot is None:
                    return None  # the environment is going away: never answer
                inv = env.slot
                inv.started = time.perf_counter()
                inv.delivered.set()
            deadline = int((time.time() + inv.fn.timeout_s) * 1000)
            fn_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{inv.fn.name}"
            return self._reply(200, inv.payload, {
                "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline),
                "Lambda-Runtime-Invoked-Function-Arn": fn_arn,
                "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
            })

        def do_POST(self) -> None:
            try:
                body = read_body(self, MAX_PAYLOAD_BYTES)
            except Refused as refused:  # http_body: refused before or instead of reading it
                self._reply(refused.status, json.dumps({"errorMessage": refused.message,
                            "errorType": refused.reason}).encode(), {"Connection": "close"})
                return linger_close(self, refused.unread)
            if self.path == f"{prefix}/init/error":
                env.init_error = body or b'{"errorType":"Runtime.Unknown"}'
                self._reply(202)
                env.ended.set()
                with env.cond:
                    env.cond.notify_all()
                return None
            parts = self.path.split("/")
            if len(parts) != 6 or parts[3] != "invocation" or parts[5] not in ("response", "error"):
                return self._reply(404, b'{"errorType":"NotFound"}')
            with env.cond:
                inv = env.slot
                if inv is None or inv.request_id != parts[4] or inv.done.is_set():
                    return self._reply(400, b'{"errorType":"InvalidRequestID"}')
                inv.body = body
                if parts[5] == "error":
                    inv.error_type = self.headers.get("Lambda-Runtime-Function-Error-Type",
                                                      "Unhandled")
                inv.finished = time.perf_counter()
                inv.done.set()
            return self._reply(202)

    return RuntimeAPI


def runtime_dir(target: Path) -> Path:
    """A directory holding only the runtime client (Lambda's /var/runtime), linked from here."""
    target.mkdir(parents=True, exist_ok=True)
    for module in RUNTIME_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{module} is not importable: `pip install -e '.[standins]'` "
                               "provides the Lambda runtime client (awslambdaric)")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        link = target / source.name
        if not link.exists():
            link.symlink_to(source)
    return target
