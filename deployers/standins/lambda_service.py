"""A local AWS Lambda service: the Invoke API in front, the Runtime API behind, real processes.

``LocalLambda`` serves, on 127.0.0.1 at a port chosen at run time, the data-plane Invoke API as
boto3 ``lambda.invoke`` sends it (``POST /2015-03-31/functions/{name}/invocations``; build the
client with ``endpoint_url=LocalLambda.url``). Each execution environment is a real
``python -m awslambdaric <handler>`` process, the runtime client AWS ships, talking to its own
Runtime API server (``GET /2018-06-01/runtime/invocation/next``, ``POST .../{id}/response``,
``.../{id}/error``, ``/2018-06-01/runtime/init/error``) at ``AWS_LAMBDA_RUNTIME_API``.

Promises, as Lambda keeps them:

- One request at a time per environment. An invoke takes an idle environment; when none is
  idle it starts a new one (a cold start: process start + handler import = Init), up to the
  function's concurrency limit (reserved concurrency, else the account limit). Beyond it the
  answer is 429 ``TooManyRequestsException`` at once.
- Provisioned concurrency: that many environments are started and initialised when the
  function is added; their invocations report no Init Duration.
- The function timeout ends the environment (its process group is killed) and the invoke
  answers ``X-Amz-Function-Error: Unhandled`` with ``Task timed out after X seconds``. Init has
  Lambda's own 10 s limit. A failing Init (``/init/error``) or a runtime that exits is
  reported the same way with Lambda's error types, and the environment is discarded.
- Each invoke appends a ``REPORT`` line (Duration, Billed Duration, Memory Size, Max Memory
  Used, Init Duration on cold starts) to the environment's log; with ``LogType='Tail'`` the
  last 4 KB come back base64-encoded in ``X-Amz-Log-Result``. ``reports`` keeps every
  ``Report`` for in-process readers. Billed Duration includes Init for on-demand cold starts
  (Lambda bills INIT since 2025-08-01) and is rounded up to 1 ms.
- Isolation: an environment sees only the package directory (first on ``sys.path``, and its
  working directory) and a runtime directory holding the runtime client: the interpreter runs
  with ``-S``, so the venv's site-packages are invisible, as on Lambda. Its environment
  variables are Lambda's (no credentials: nothing here has a role to pass on).
- Memory size, when this machine can shape processes (root and a writable cgroup v1 or v2
  tree; ``shaped`` turns it off): each environment runs in a cgroup of its own, shaped as
  Lambda shapes that memory size (``lambda_shape``: 1 vCPU of quota per 1,769 MB, Lambda's
  visible cores up to this machine's, a memory limit of the memory size, no swap). Its
  process starts inside the group; the group goes when the environment is discarded.
- Out of memory: an environment the kernel kills for memory fails its invocation (or its
  Init) with ``Runtime.OutOfMemory`` (``RequestId: <id> Error: Runtime exited with error:
  signal: killed``, ``X-Amz-Function-Error: Unhandled``), its REPORT line ends with the
  fields ``Status: error`` and ``Error Type: Runtime.OutOfMemory``, and it is discarded: the
  next invoke is a cold start. Max Memory Used is the group's peak as the kernel charges it
  (page cache of the files it read included), or the process's peak resident set (VmHWM) when
  unshaped.
- ``usage(name)`` is the CPU the environments of a function used (live ones, plus the last
  reading of each discarded one) and how often their quota stopped them; ``capacity(name)``
  how many environments of its memory size this machine runs at once at their full share.
  Both are ``None`` when unshaped.

Not reproduced: the cores an environment sees are at most this machine's (Lambda shows 2 to 6),
so a quota above them is never reached. A group is charged only for the pages it brings in:
shared libraries already in this machine's page cache (numpy, onnxruntime once any process
loaded them) count neither against its limit nor in its Max Memory Used, where on Lambda, a
fresh microVM per environment, they do; ``Report.peak_rss_mb`` (VmHWM) counts them. Unshaped (no root or no
cgroup tree), memory size is passed to the function (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``) and
reported only, and every environment shares this machine's cores. Versions and aliases run the
same package (the runtime hosts one package per function).

Replacing a function without an outage: ``stage(config)`` starts the new package's provisioned
environments beside the serving ones (blocking until their Init is done) without serving it;
``commit(staged)`` makes it the function in one step, so every invoke that begins afterwards runs
the new package, while each invocation already running finishes on its old environment, which
then ends (``commit`` waits for them, up to ``drain_s``); ``discard(staged)`` ends a staged
package that was never committed. ``usage`` keeps counting the replaced environments.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from deployers.base import Capacity, Usage
from deployers.standins.lambda_environment import (
    EXIT_ERROR,
    INIT_TIMEOUT_S,
    OUT_OF_MEMORY,
    Environment,
    FunctionConfig,
    Invocation,
    QuietServer,
    runtime_dir,
)
from deployers.standins.lambda_invoke_api import Report, Result, Throttled, invoke_api
from deployers.standins.lambda_shape import (
    ACCOUNT_CONCURRENCY,
    capacity,
    lambda_shape,
    mem_available_mb,
)
from deployers.standins.shaping import CpuStat, Shape, ShapingError, add_stats, backend, machine_cores

LOG_TAIL_BYTES = 4096

__all__ = ["FunctionConfig", "LocalLambda", "Report", "Result", "Staged", "Throttled"]


class _Function:
    def __init__(self, config: FunctionConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.envs: list[Environment] = []
        self.busy: set[int] = set()
        self.ended = CpuStat(0, 0, 0.0, 0.0)  # last readings of the discarded environments
        self.ended_groups = 0
        self.retired = False  # replaced: takes no new invocation, ends each env as it goes idle
        self.idle = threading.Condition(self.lock)  # notified when an invocation ends
        self.previous: _Function | None = None  # the function this one replaced (its usage)

    def retire(self, env: Environment) -> None:
        """Drop ``env`` (already killed) from the live ones, keeping its last reading; call
        with ``lock`` held."""
        if env in self.envs:
            self.envs.remove(env)
            stat = env.cpu_stat()
            if stat is not None:
                self.ended = add_stats(self.ended, stat)
                self.ended_groups += 1


@dataclass(frozen=True)
class Staged:
    """A function started by ``LocalLambda.stage`` and not yet serving."""

    fn: _Function


class LocalLambda:
    """Hosts functions in real runtime-client processes; serves the Invoke API at ``url``.

    ``shaped``: ``None`` shapes each environment when this machine has a cgroup backend
    (``shaping.backend()``, which warns once when it has none); ``False`` never shapes;
    ``True`` requires shaping (``ShapingError`` without a backend)."""

    def __init__(self, account_concurrency: int = ACCOUNT_CONCURRENCY, shaped: bool | None = None) -> None:
        self._backend = backend() if shaped is not False else None
        if shaped and self._backend is None:
            raise ShapingError("shaped=True, but this machine cannot shape processes (it needs "
                               "root and a writable cgroup tree at /sys/fs/cgroup); pass "
                               "shaped=None to run unshaped there")
        self.account_concurrency = account_concurrency
        self.reports: list[Report] = []
        self._functions: dict[str, _Function] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="niser-lambda-runtime-"))
        self._runtime_dir = runtime_dir(self._tmp / "runtime")
        self._server = QuietServer(("127.0.0.1", 0), invoke_api(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_function(self, config: FunctionConfig) -> None:
        """Host ``config`` (replacing a function of that name); blocks until its provisioned
        environments have finished Init. ``RuntimeError`` if one of them fails."""
        self.remove_function(config.name)
        self._functions[config.name] = self.stage(config).fn

    def stage(self, config: FunctionConfig) -> Staged:
        """Start ``config``'s provisioned environments without serving them (the function of
        that name, if any, keeps serving); blocks until their Init is done. ``RuntimeError``
        (nothing left running) if one of them fails."""
        limit = self._limit(config)
        if config.provisioned_concurrency > limit:
            raise ValueError(f"provisioned_concurrency={config.provisioned_concurrency} exceeds "
                             f"the function's concurrency limit {limit}")
        fn = _Function(config)
        try:
            for _ in range(config.provisioned_concurrency):
                fn.envs.append(Environment(config, self._runtime_dir, True, self._backend))
            for env in fn.envs:
                if not self._wait_init(env):
                    log = "\n".join(env.log[-20:])
                    error = (f"{OUT_OF_MEMORY}: killed at its {config.memory_mb} MB limit "
                             "(raise memory_mb)" if env.oom else (env.init_error or b"").decode())
                    raise RuntimeError(f"a provisioned environment of {config.name!r} failed "
                                       f"Init: {error}\n{log}")
        except BaseException:  # a failure or Ctrl-C: nothing of it keeps running
            self.discard(Staged(fn))
            raise
        return Staged(fn)

    def commit(self, staged: Staged, drain_s: float = 900.0) -> bool:
        """Serve ``staged`` as its function from now on; the function it replaces takes no new
        invocation, its idle environments end now and each busy one when its invocation ends.
        Returns once they have all ended (True) or after ``drain_s`` (False; they still end
        when their invocations do)."""
        fn = staged.fn
        old = self._functions.get(fn.config.name)
        fn.previous = old
        self._functions[fn.config.name] = fn
        if old is None:
            return True
        with old.lock:
            old.retired = True
            idle = [env for env in old.envs if env.id not in old.busy]
        for env in idle:
            env.kill()
        deadline = time.monotonic() + drain_s
        with old.lock:
            for env in idle:
                old.retire(env)
            while old.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                old.idle.wait(left)
        return True

    @staticmethod
    def discard(staged: Staged) -> None:
        """End the environments of a staged function that was never committed."""
        for env in staged.fn.envs:
            env.kill()

    def remove_function(self, name: str) -> None:
        """Stop every environment of ``name``; absent is not an error."""
        fn = self._functions.pop(name, None)
        if fn is not None:
            for env in fn.envs:
                env.kill()

    def functions(self) -> list[str]:
        return sorted(self._functions)

    def environments(self, name: str) -> int:
        """Live environments of function ``name``."""
        return len(self._functions[name].envs)

    @property
    def shaping(self) -> str:
        """How environments are shaped: ``cgroup-v1``, ``cgroup-v2`` or ``none``."""
        return self._backend.version if self._backend is not None else "none"

    def shape(self, name: str) -> Shape | None:
        """The shape of each environment of ``name`` (``lambda_shape``); ``None`` when
        unshaped. ``KeyError`` if no such function."""
        memory_mb = self._functions[name].config.memory_mb
        if self._backend is None:
            return None
        return lambda_shape(memory_mb, machine_cores())

    def usage(self, name: str) -> Usage | None:
        """CPU the environments of ``name`` used so far: every live environment's group plus
        the last reading of each one already discarded; ``quota_cpus`` is one environment's
        quota. ``None`` when unshaped; ``KeyError`` if no such function."""
        fn = self._functions[name]
        shape = self.shape(name)
        if shape is None or self._backend is None:
            return None
        envs: list[Environment] = []
        total, groups, live = CpuStat(0, 0, 0.0, 0.0), 0, 0
        at: _Function | None = fn
        while at is not None:  # this function, then the ones it replaced
            with at.lock:
                envs, ended, ended_groups = list(at.envs), at.ended, at.ended_groups
            stats = [s for s in (env.cpu_stat() for env in envs) if s is not None]
            total = functools.reduce(add_stats, stats, add_stats(total, ended))
            groups, live = groups + len(envs) + ended_groups, live + len(envs)
            at = at.previous
        return Usage(self._backend.version, groups, live, shape.cpus, total.periods,
                     total.throttled_periods, total.throttled_s, total.used_cpu_s)

    def capacity(self, name: str) -> Capacity | None:
        """How many environments of ``name``'s memory size this machine runs at once at their
        full share (``lambda_shape.capacity``); ``None`` when unshaped. ``KeyError`` if no
        such function."""
        memory_mb = self._functions[name].config.memory_mb
        if self._backend is None:
            return None
        return capacity(memory_mb, machine_cores(), mem_available_mb())

    def close(self) -> None:
        """Stop every environment and the Invoke API server."""
        for name in list(self._functions):
            self.remove_function(name)
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalLambda:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _limit(self, config: FunctionConfig) -> int:
        if config.reserved_concurrency is not None:
            return config.reserved_concurrency
        return self.account_concurrency

    @staticmethod
    def _wait_init(env: Environment) -> bool:
        deadline = time.monotonic() + INIT_TIMEOUT_S
        while time.monotonic() < deadline:
            if env.ready.wait(0.01):
                return True
            if env.ended.is_set():
                return False
        return False

    def _acquire(self, fn: _Function) -> tuple[Environment, bool] | None:
        """An idle environment of ``fn`` (or a new one: cold); ``None`` once ``fn`` has been
        replaced (the caller takes the function that replaced it)."""
        with fn.lock:
            if fn.retired:
                return None
            for env in fn.envs:
                if env.id not in fn.busy and not env.ended.is_set():
                    fn.busy.add(env.id)
                    return env, False
            if len(fn.envs) >= self._limit(fn.config):
                raise Throttled(fn.config.name)
            env = Environment(fn.config, self._runtime_dir, False, self._backend)
            fn.envs.append(env)
            fn.busy.add(env.id)
            return env, True

    def _release(self, fn: _Function, env: Environment, discard: bool) -> None:
        with fn.lock:
            discard = discard or fn.retired
        if discard:
            env.kill()
        with fn.lock:
            fn.busy.discard(env.id)
            if discard:
                fn.retire(env)
            fn.idle.notify_all()

    def invoke(self, name: str, payload: bytes, qualifier: str | None = None) -> Result:
        """Run one invocation; ``KeyError`` if no such function, ``Throttled`` past the limit."""
        while (got := self._acquire(fn := self._functions[name])) is None:
            pass  # replaced meanwhile: the new function serves it
        env, cold = got
        cfg = fn.config
        version = cfg.aliases.get(qualifier or "", qualifier or "$LATEST")
        inv = Invocation(payload, cfg)
        first_line = len(env.log)
        status, discard, report_error = "success", False, None
        ready = self._wait_init(env)
        if not ready and env.oom:  # killed for memory during Init
            status, discard, report_error = "error", True, OUT_OF_MEMORY
            inv.error_type, inv.body = env.exit_error(inv.request_id)
            inv.started = inv.finished = time.perf_counter()
        elif not ready:
            status, discard = "init_error", True
            inv.error_type = "Runtime.Unknown"
            inv.body = env.init_error or json.dumps({
                "errorType": "Sandbox.Timedout" if not env.ended.is_set() else "Runtime.ExitError",
                "errorMessage": f"RequestId: {inv.request_id} Error: Init did not finish "
                                f"(limit {INIT_TIMEOUT_S:.0f} s; exit status "
                                f"{env.proc.poll()})"}).encode()
            inv.started = inv.finished = time.perf_counter()
        else:
            with env.cond:
                env.slot = inv
                env.cond.notify_all()
            while not inv.delivered.wait(0.5):  # the handler has the event, or the process died
                if env.ended.is_set() and not inv.delivered.is_set():
                    inv.error_type, inv.body = env.exit_error(inv.request_id)
                    inv.started = inv.finished = time.perf_counter()
                    inv.done.set()
                    break
            # the function timeout counts from the moment the handler received the event
            if not inv.done.wait(max(0.0, inv.started + cfg.timeout_s - time.perf_counter())):
                status, discard = "timeout", True
                inv.finished = inv.started + cfg.timeout_s
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                inv.error_type = "Sandbox.Timedout"
                inv.body = json.dumps({"errorMessage": f"{stamp}Z {inv.request_id} Task timed "
                                       f"out after {cfg.timeout_s:.2f} seconds"}).encode()
            elif inv.error_type == OUT_OF_MEMORY:
                status, discard, report_error = "error", True, OUT_OF_MEMORY
            elif inv.error_type == EXIT_ERROR:
                status, discard = "exit", True
            elif inv.error_type is not None:
                status = "error"
            with env.cond:
                env.slot = None
        init_ms = env.init_ms if cold and not env.init_reported else None
        env.init_reported = True
        duration = (inv.finished - inv.started) * 1000
        billed = math.ceil(duration + (init_ms or 0.0))
        report = Report(inv.request_id, name, env.id, status, duration, max(billed, 1),
                        cfg.memory_mb, env.max_memory_mb(), init_ms, report_error,
                        env.peak_rss_mb())
        lines = [f"START RequestId: {inv.request_id} Version: {version}",
                 *env.log[first_line:], f"END RequestId: {inv.request_id}", report.line()]
        self._release(fn, env, discard)
        self.reports.append(report)
        tail = "\n".join(lines).encode()[-LOG_TAIL_BYTES:].decode("utf-8", "ignore")
        return Result(inv.body, "Unhandled" if inv.error_type else None, tail, report, version)
