"""The Mistral LLM, in two places: a budgeted, verified fallback and the ask_agent loop.

Deterministic first: the compiler pipeline ports what it covers with 0 LLM calls. Only a kernel
that comes back ``unsupported`` may be handed to :func:`llm_translate_kernel`, which

1. sends the Fortran, the diagnostics and the target's calling convention to Mistral,
2. extracts a complete Python module from the answer (a ```python fence),
3. checks it statically (parse only: LLM output is never imported or run in this process),
4. verifies it with the same gfortran harness as the deterministic ports, in the sandbox,
5. on a mismatch or failure, sends the error report back for a repair,

with at most ``MAX_CALLS_PER_KERNEL`` (4) calls per kernel. Past it the kernel stays
``unsupported`` and a diagnostic says why.

:func:`run_agent` is a bounded function-calling loop over local tools the caller supplies
(kernels/agent.py wires them to the engine and the tenant's history).

Everything goes through the ``mistralai`` SDK (``Mistral(...).chat.complete``); there is no
hand-written HTTP. Pure Python: no Django import, so the CLI and the tests can use it directly.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import keyword
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kernels.engine import ir
from kernels.engine.backends.common import GeneratedCode
from kernels.engine.egress import EndpointRefused, pinned_client
from kernels.engine.report import (
    Diagnostic,
    EngineError,
    KernelResult,
    ProgressCallback,
)
from kernels.engine.sandbox import SandboxUnavailable

DEFAULT_MODEL = "codestral-latest"
MAX_CALLS_PER_KERNEL = 4
DEFAULT_AGENT_STEPS = 6
# What one tool result may cost in the agent's context; longer outputs are cut.
MAX_TOOL_OUTPUT_CHARS = 6000

# --------------------------------------------------------------------------------------------
# Errors: one family, each saying what happened at the provider and what to do about it.


class LlmError(EngineError):
    """The LLM provider could not give an answer. ``kind`` is a stable machine-readable tag."""

    kind = "llm_error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class LlmAuthError(LlmError):
    """401/403: the key is wrong, revoked, or not allowed to use the model."""

    kind = "llm_auth"


class LlmRateLimited(LlmError):
    """429 that did not clear within the bounded retries; ``retry_after`` is in seconds."""

    kind = "llm_rate_limited"


class LlmUnavailable(LlmError):
    """5xx, connection refused, or another transport failure after the bounded retries."""

    kind = "llm_unavailable"


class LlmTimeout(LlmError):
    """The provider did not answer within the per-request timeout, on every attempt."""

    kind = "llm_timeout"


class LlmBadResponse(LlmError):
    """The provider answered, but not with a chat completion we can read (malformed body)."""

    kind = "llm_bad_response"


# --------------------------------------------------------------------------------------------
# Client


@dataclass(frozen=True)
class LlmConfig:
    """Everything needed to talk to one tenant's model. ``api_key`` never leaves this object."""

    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL
    server_url: str | None = None  # endpoint override (self-hosted Mistral-compatible server)
    timeout_s: float = 120.0
    max_attempts: int = 3  # HTTP attempts per call, for 429 / 5xx / timeouts / connection errors
    # A Retry-After longer than this is not slept through: the caller is told to come back later.
    max_retry_wait_s: float = 20.0
    temperature: float = 0.1
    # Only an operator's setting turns this on: connecting to loopback or private addresses.
    allow_private_endpoint: bool = False


@dataclass
class ToolCallRequest:
    id: str
    name: str
    arguments: str | dict[str, Any]

    def parsed_arguments(self) -> dict[str, Any]:
        if isinstance(self.arguments, dict):
            return self.arguments
        if not self.arguments.strip():
            return {}
        value = json.loads(self.arguments)
        if not isinstance(value, dict):
            raise ValueError("tool arguments must be a JSON object")
        return value


@dataclass
class ChatReply:
    content: str
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def assistant_message(self) -> dict[str, Any]:
        """The message to append to the conversation so the model sees its own turn."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {
                        "name": tc.name,
                        "arguments": tc.arguments
                        if isinstance(tc.arguments, str)
                        else json.dumps(tc.arguments),
                    },
                }
                for tc in self.tool_calls
            ]
        return msg


class ChatClient(Protocol):
    model: str

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> ChatReply: ...


def _content_text(content: Any) -> str:
    """Assistant content is a string or a list of chunks (text, thinking, ...): keep the text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for chunk in content:
        text = getattr(chunk, "text", None)
        if text is None and isinstance(chunk, dict):
            text = chunk.get("text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


class MistralChat:
    """A thin wrapper over ``mistralai.Mistral`` that owns timeouts, bounded retries and errors.

    The SDK's own retry loop is switched off because it sleeps through any Retry-After however
    long: a tenant request must not hang for an hour on a 429. Here a call makes at most
    ``max_attempts`` HTTP attempts and only sleeps a Retry-After up to ``max_retry_wait_s``.
    """

    def __init__(
        self,
        config: LlmConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ):
        from mistralai.client import Mistral
        from mistralai.client.utils import BackoffStrategy, RetryConfig

        self.config = config
        self.model = config.model
        self._sleep = sleep
        self._no_retries = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)
        self._client = Mistral(
            api_key=config.api_key,
            server_url=_base_url(config.server_url),
            # Every connection goes to a checked, pinned address (kernels.engine.egress).
            client=pinned_client(
                allow_private=config.allow_private_endpoint, timeout_s=config.timeout_s
            ),
            retry_config=self._no_retries,
            timeout_ms=int(config.timeout_s * 1000),
        )
        self.calls = 0  # completions actually returned (what the provider bills)
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> ChatReply:
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
        }
        if tools:
            kwargs["tools"] = tools
            kwargs["tool_choice"] = tool_choice or "auto"
        last: LlmError | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                response = self._client.chat.complete(**kwargs)
            except Exception as exc:  # the SDK and httpx raise many types; classify them once
                error = self._classify(exc)
                if not self._retryable(error) or attempt == self.config.max_attempts:
                    raise error from exc
                wait = self._backoff(error, attempt)
                if wait is None:
                    raise error from exc
                last = error
                self._sleep(wait)
                continue
            return self._reply(response)
        raise last or LlmUnavailable("Mistral did not answer")  # pragma: no cover

    # -- helpers -------------------------------------------------------------------------------
    def _reply(self, response: Any) -> ChatReply:
        choices = getattr(response, "choices", None) or []
        if not choices or getattr(choices[0], "message", None) is None:
            raise LlmBadResponse("Mistral returned a completion without a message")
        message = choices[0].message
        calls = []
        for i, tc in enumerate(getattr(message, "tool_calls", None) or []):
            fn = tc.function
            calls.append(
                ToolCallRequest(id=str(tc.id or f"call{i}"), name=fn.name, arguments=fn.arguments)
            )
        usage = getattr(response, "usage", None)
        reply = ChatReply(
            content=_content_text(getattr(message, "content", None)),
            tool_calls=calls,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=str(getattr(choices[0], "finish_reason", "") or ""),
        )
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        return reply

    def _classify(self, exc: Exception) -> LlmError:
        import httpx2
        from mistralai.client import errors

        where = " at the configured endpoint" if self.config.server_url else ""
        if isinstance(exc, LlmError):
            return exc
        if isinstance(exc, EndpointRefused):
            return LlmError(str(exc))
        if isinstance(exc, httpx2.TimeoutException):
            return LlmTimeout(
                f"Mistral{where} did not answer within {self.config.timeout_s:g} s",
            )
        if isinstance(exc, httpx2.TransportError):
            # No errno, address or port: the text must not tell open ports from closed ones.
            return LlmUnavailable(f"cannot reach Mistral{where}")
        if isinstance(exc, errors.ResponseValidationError):
            return LlmBadResponse(
                f"Mistral{where} answered with a body that is not a chat completion: "
                f"{str(exc.body)[:200]!r}",
                status=exc.status_code,
            )
        if isinstance(exc, errors.MistralError):
            status = exc.status_code
            detail = _error_detail(exc.body)
            if status in (401, 403):
                return LlmAuthError(
                    f"Mistral rejected the API key ({status}{': ' + detail if detail else ''}). "
                    "Set a valid key with PUT /api/v1/llm/credential or in the admin.",
                    status=status,
                )
            if status == 429:
                return LlmRateLimited(
                    f"Mistral rate limit reached (429{': ' + detail if detail else ''})",
                    status=status,
                    retry_after=_retry_after_s(exc.headers),
                )
            if status >= 500:
                return LlmUnavailable(
                    f"Mistral{where} failed with {status}{': ' + detail if detail else ''}",
                    status=status,
                )
            return LlmError(
                f"Mistral refused the request ({status}{': ' + detail if detail else ''})",
                status=status,
            )
        if isinstance(exc, errors.NoResponseError):
            return LlmUnavailable(f"no response from Mistral{where}")
        if isinstance(exc, ValueError):  # pydantic validation of our own messages
            return LlmError(f"invalid request to Mistral: {exc}")
        return LlmError(f"Mistral call failed: {type(exc).__name__}: {exc}")

    @staticmethod
    def _retryable(error: LlmError) -> bool:
        return isinstance(error, (LlmRateLimited, LlmUnavailable, LlmTimeout))

    def _backoff(self, error: LlmError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when waiting makes no sense."""
        if isinstance(error, LlmRateLimited) and error.retry_after is not None:
            if error.retry_after > self.config.max_retry_wait_s:
                return None  # tell the caller when to come back instead of holding the request
            return float(error.retry_after)
        return min(0.5 * 2 ** (attempt - 1), self.config.max_retry_wait_s)


def _base_url(server_url: str | None) -> str | None:
    """The SDK appends ``/v1/chat/completions``; accept an override given with or without /v1."""
    if not server_url:
        return None
    url = server_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _retry_after_s(headers: Any) -> int | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0, int(float(ms) / 1000 + 0.999))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0, int(float(value) + 0.999))
    except ValueError:
        pass
    try:
        from datetime import datetime
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
        return max(0, int((when - datetime.now(when.tzinfo)).total_seconds() + 0.999))
    except (TypeError, ValueError):
        return None


def _error_detail(body: Any) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:200]
    if isinstance(data, dict):
        msg = data.get("message") or data.get("detail") or data.get("error")
        if isinstance(msg, (dict, list)):
            msg = json.dumps(msg)
        return str(msg or "")[:200]
    return str(data)[:200]


# --------------------------------------------------------------------------------------------
# Prompts


SYSTEM_PROMPT = """\
You port Fortran HPC kernels to Python for the fortranspire translator.
Answer with ONE complete, importable Python module in a single ```python fenced block, and nothing
that needs to be run to be understood. Rules:
- Only import numpy, numba, math and cmath. No I/O, no os/sys/subprocess, no eval/exec.
- Keep Fortran semantics exactly: column-major arrays with the declared lower bounds mapped to
  0-based indices, integer division truncating toward zero, MOD/MODULO signs, SIGN(a, 0) = |a|,
  NINT rounding half away from zero, real(4) arithmetic in float32, the DO trip count evaluated
  once, and the order of loops that carry dependences.
- Your code is verified against the original compiled with gfortran on random inputs; every
  INTENT(OUT/INOUT) argument must match.
"""

_CPU_CONVENTION = """\
Target: CPU with numba. Decorate the kernel with @numba.njit (use numba.prange only for loops
whose iterations are independent, with parallel=True). Define the entry function
`{entry}({params})` at module level: it takes the same positional arguments as the Fortran
routine, arrays are Fortran-ordered numpy arrays (index a(lo:hi) as a[i - lo]) modified in place,
and scalar INTENT(OUT/INOUT) values are returned (one value, or a tuple in argument order when
there are several). The entry may be the njit function itself or a plain Python wrapper."""

_GPU_CONVENTION = """\
Target: NVIDIA GPU with numba.cuda. Write @cuda.jit kernels (one thread per independent
iteration, guarded against out-of-range indices; loops that carry dependences stay sequential)
and a host driver function `{entry}({params})` at module level: it takes the same positional
arguments as the Fortran routine (Fortran-ordered numpy arrays, index a(lo:hi) as a[i - lo]),
copies arrays to the device with cuda.to_device, launches the kernels with an explicit grid,
copies results back into the caller's arrays in place (copy_to_host(ary)), and returns scalar
INTENT(OUT/INOUT) values (one value, or a tuple in argument order). Use
`from numba import cuda`. It must also run under the CUDA simulator."""


def entry_name(kernel: ir.Kernel) -> str:
    """The Python function the LLM must define: the kernel's name, made a valid identifier."""
    name = re.sub(r"\W", "_", kernel.name.lower()) or "kernel"
    if not (name[0].isalpha() or name[0] == "_"):
        name = f"k_{name}"
    return f"{name}_" if keyword.iskeyword(name) else name


def _describe_args(kernel: ir.Kernel) -> str:
    lines = []
    for a in kernel.args:
        try:
            dtype = a.type.numpy_dtype
        except ValueError:
            dtype = str(a.type)
        if a.is_array:
            dims = ", ".join(
                f"{ir.fortran_text(d.lower)}:{ir.fortran_text(d.upper) if d.upper is not None else '*'}"
                for d in a.dims
            )
            lines.append(
                f"- {a.name}: {a.type} array ({dims}), numpy {dtype} order='F', intent({a.intent})"
            )
        else:
            lines.append(f"- {a.name}: {a.type} scalar, numpy {dtype}, intent({a.intent})")
    return "\n".join(lines) or "- (no arguments)"


def translation_messages(
    kernel: ir.Kernel, result: KernelResult, *, target: str
) -> list[dict[str, Any]]:
    """The first request: Fortran, diagnostics, calling convention, the entry to define."""
    entry = entry_name(kernel)
    params = ", ".join(a.name for a in kernel.args)
    convention = (_GPU_CONVENTION if target == "gpu" else _CPU_CONVENTION).format(
        entry=entry, params=params
    )
    diagnostics = (
        "\n".join(f"- line {d.line}, column {d.column}: {d.message}" for d in result.diagnostics)
        or "- (none reported)"
    )
    unsupported = "\n".join(
        f"- line {u.line}: {u.construct}{(' ' + u.text.strip()) if u.text else ''}"
        for u in kernel.unsupported
    )
    user = (
        f"The deterministic translator could not port the Fortran routine `{kernel.fortran_entry}`"
        f" (kernel `{kernel.name}`).\n\nDiagnostics:\n{diagnostics}\n"
        + (f"\nUnsupported constructs:\n{unsupported}\n" if unsupported else "")
        + f"\nArguments, in call order:\n{_describe_args(kernel)}\n\n{convention}\n\n"
        f"Fortran source:\n```fortran\n{kernel.fortran_source.strip()}\n```\n\n"
        f"Reply with the complete Python module defining `{entry}` in one ```python block."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def repair_message(problem: str, *, entry: str, calls_left: int) -> dict[str, Any]:
    return {
        "role": "user",
        "content": (
            f"That module was rejected:\n{problem}\n\nFix it and reply with the complete "
            f"corrected module defining `{entry}` in one ```python block "
            f"({calls_left} attempt{'s' if calls_left != 1 else ''} left)."
        ),
    }


# --------------------------------------------------------------------------------------------
# Reading and checking the answer (static only: nothing here executes LLM output)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
# The vocabulary a port may use, as a tree: a module's allowed attributes, and for the few
# namespaces that have their own attributes (cuda.threadIdx.x, cuda.shared.array), the next level.
# ``ANY`` admits every public name (math and cmath are pure functions and constants). Anything
# not listed is refused, so ``np.ctypeslib...``, ``np.f2py.os.system`` or ``numba.core...`` are.
ANY = "*"
_NUMPY_NAMES = (
    "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64 complex64 "
    "complex128 intp empty zeros ones full empty_like zeros_like ones_like full_like copy array "
    "asarray asfortranarray ascontiguousarray arange linspace eye identity sqrt cbrt square exp "
    "exp2 expm1 log log2 log10 log1p sin cos tan arcsin arccos arctan arctan2 sinh cosh tanh "
    "arcsinh arccosh arctanh hypot deg2rad rad2deg radians degrees abs absolute fabs sign "
    "copysign floor ceil trunc rint round around mod fmod remainder divmod power float_power "
    "minimum maximum fmin fmax clip sum prod cumsum cumprod dot vdot matmul outer trace "
    "transpose reshape ravel min max amin amax argmin argmax mean where isnan isinf isfinite "
    "nan inf pi e finfo iinfo real imag conj conjugate add subtract multiply divide "
    "true_divide floor_divide negative positive reciprocal logical_and logical_or logical_not "
    "logical_xor bitwise_and bitwise_or bitwise_xor invert left_shift right_shift all any "
    "count_nonzero nextafter spacing ldexp frexp heaviside shape size ndim dtype newaxis sort "
    "argsort diff"
).split()
_NUMBA_TYPES = (
    "float32 float64 int8 int16 int32 int64 uint8 uint32 uint64 boolean complex64 complex128"
)
_CUDA_TREE: dict[str, object] = {
    **{
        n: None
        for n in (
            "jit grid gridsize syncthreads syncwarp threadfence to_device device_array "
            "device_array_like pinned_array synchronize is_available warpsize laneid "
            "activemask ballot_sync all_sync any_sync shfl_sync shfl_down_sync shfl_up_sync "
            "shfl_xor_sync"
        ).split()
    },
    **{
        n: {"x": None, "y": None, "z": None}
        for n in ("threadIdx", "blockIdx", "blockDim", "gridDim")
    },
    "shared": {"array": None},
    "local": {"array": None},
    "const": {"array_like": None},
    "atomic": {n: None for n in ("add", "sub", "max", "min", "compare_and_swap", "cas", "exch")},
}
_MODULES: dict[str, dict[str, object] | str] = {
    "numpy": {n: None for n in _NUMPY_NAMES},
    "math": ANY,
    "cmath": ANY,
    "numba": {
        **{n: None for n in ("njit", "jit", "prange", "vectorize", *_NUMBA_TYPES.split())},
        "cuda": _CUDA_TREE,
        "types": {n: None for n in _NUMBA_TYPES.split()},
    },
    "numba.cuda": _CUDA_TREE,
    "__future__": {"annotations": None},
}
#: Attributes a port may read on its own values (arrays, device arrays, numbers).
_VALUE_ATTRIBUTES = set(
    (
        "shape size ndim dtype T real imag flags f_contiguous c_contiguous itemsize nbytes "
        "copy astype fill sum prod min max argmin argmax mean reshape ravel flatten item "
        "conj conjugate transpose copy_to_host copy_to_device append items keys values get"
    ).split()
)
#: Builtins a port may use; every other free name (eval, exec, open, getattr, globals,
#: __import__, type, vars, compile, input, breakpoint...) is refused.
_BUILTINS = set(
    (
        "range len min max abs int float bool complex round sum tuple list zip enumerate "
        "divmod pow print any all reversed sorted isinstance Exception ValueError "
        "ArithmeticError ZeroDivisionError IndexError RuntimeError"
    ).split()
)
_REFUSED_NODES = (
    ast.AsyncFunctionDef,
    ast.AsyncFor,
    ast.AsyncWith,
    ast.Await,
    ast.With,
    ast.Global,
    ast.Nonlocal,
    ast.Yield,
    ast.YieldFrom,
)


class AnswerRejected(ValueError):
    """The answer cannot be verified as it is; the message goes back to the model for a repair."""


def extract_python(content: str, entry: str) -> str:
    """The Python module in the answer: the fenced block that defines ``entry``, else the longest."""
    blocks = [
        body
        for lang, body in _FENCE.findall(content or "")
        if lang.lower() in ("", "python", "py", "python3", "numba")
    ]
    if not blocks:
        raise AnswerRejected("no ```python fenced code block found in the answer")
    defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", b, re.M)]
    chosen = max(defining or blocks, key=len)
    return chosen.strip() + "\n"


def check_module(code: str, entry: str) -> None:
    """Parse (never import) the module and check it against an allow-list; refuse the rest.

    Allowed: imports of numpy, numba (and ``numba.cuda``), math, cmath; attribute chains that
    follow :data:`_MODULES` from those imports (``np.zeros``, ``cuda.threadIdx.x``) and the
    value attributes in :data:`_VALUE_ATTRIBUTES` (``a.shape``) on anything else; the builtins
    in :data:`_BUILTINS`; and the module's own names. Refused: every other import, attribute or
    free name, any dunder, ``with``/async/global statements and classes other than a plain
    exception. The check is defence in depth: accepted code still only runs in the sandbox.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise AnswerRejected(f"SyntaxError at line {exc.lineno}: {exc.msg}") from exc
    problems: list[str] = []
    modules: dict[str, dict[str, object] | str] = {}  # local name -> allowed attribute tree
    defined: set[str] = set()
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for a in node.names:
                tree_for = _MODULES.get(a.name)
                if tree_for is None or a.name == "__future__":
                    problems.append(f"line {line}: import of `{a.name}` is not allowed")
                    continue
                if a.asname is None and "." in a.name:
                    problems.append(f"line {line}: write `from {a.name} import ...` instead")
                    continue
                modules[a.asname or a.name] = tree_for
        elif isinstance(node, ast.ImportFrom):
            tree_for = _MODULES.get(node.module or "") if node.level == 0 else None
            if tree_for is None:
                problems.append(f"line {line}: import of `{node.module}` is not allowed")
                continue
            for a in node.names:
                sub = tree_for if tree_for == ANY else tree_for.get(a.name, "missing")
                if sub == "missing" or a.name == "*":
                    problems.append(
                        f"line {line}: `from {node.module} import {a.name}` is not allowed"
                    )
                elif isinstance(sub, (dict, str)):
                    modules[a.asname or a.name] = sub
                else:
                    defined.add(a.asname or a.name)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
            if isinstance(node, ast.ClassDef) and not _plain_exception_class(node):
                problems.append(
                    f"line {line}: class `{node.name}` is not allowed (only a plain exception)"
                )
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
        elif isinstance(node, _REFUSED_NODES):
            problems.append(f"line {line}: `{type(node).__name__}` is not allowed in a port")
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("__"):
                problems.append(f"line {line}: dunder name `{name}` is not allowed")
            elif (
                isinstance(node.ctx, ast.Load)
                and name not in defined
                and name not in modules
                and name not in _BUILTINS
            ):
                problems.append(f"line {line}: name `{name}` is not allowed in a port")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__"):
                problems.append(f"line {line}: dunder attribute `{node.attr}` is not allowed")
                continue
            problem = _attribute_problem(node, modules, defined)
            if problem:
                problems.append(f"line {line}: {problem}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
            # A format string can walk attributes too: '{0.__globals__}'.format(f).
            problems.append(f"line {line}: strings naming dunders are not allowed")
    top_level = {
        n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    } | {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    if entry not in top_level:
        problems.append(f"the module does not define the entry function `{entry}` at top level")
    if problems:
        raise AnswerRejected("\n".join(dict.fromkeys(problems)))


def _plain_exception_class(node: ast.ClassDef) -> bool:
    """``class _Return(Exception): "doc"`` (the CUDA host driver's early-RETURN signal)."""
    bases_ok = all(isinstance(b, ast.Name) and b.id in _BUILTINS for b in node.bases)
    body_ok = all(
        isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        for s in node.body
    )
    return bases_ok and body_ok and not node.keywords and not node.decorator_list


def _attribute_problem(
    node: ast.Attribute, modules: Mapping[str, dict[str, object] | str], defined: set[str]
) -> str | None:
    """Why this attribute chain is refused, or None when it is allowed."""
    chain: list[str] = []
    base: ast.expr = node
    while isinstance(base, ast.Attribute):
        chain.append(base.attr)
        base = base.value
    chain.reverse()
    if isinstance(base, ast.Name) and base.id in modules and base.id not in defined:
        allowed: object = modules[base.id]
        for depth, attr in enumerate(chain):
            if allowed == ANY and depth == 0 and not attr.startswith("_"):
                allowed = None
                continue
            if not isinstance(allowed, dict) or attr not in allowed:
                return f"`{base.id}.{'.'.join(chain[: depth + 1])}` is not allowed in a port"
            allowed = allowed[attr]
        return None
    # A value's attribute (each link of ``a.flags.f_contiguous`` is visited on its own).
    if node.attr not in _VALUE_ATTRIBUTES:
        return f"attribute `.{node.attr}` is not allowed in a port"
    return None


def count_parallel_loops(code: str) -> int:
    return len(re.findall(r"\bprange\s*\(", code)) + len(re.findall(r"@cuda\.jit", code))


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else str(value)


def _format_report(report: Any) -> str:
    """The verification report as the model should read it: what differed and by how much."""
    status = getattr(report, "status", "failed")
    lines = [f"verification status: {status}"]
    message = (getattr(report, "message", "") or "").strip()
    if message:
        # The end of a traceback says what went wrong; its start is the harness.
        lines.append(f"message: {message if len(message) <= 1500 else '...' + message[-1500:]}")
    for arg in getattr(report, "arguments", None) or []:
        lines.append(
            f"- {arg.name}: {'ok' if arg.passed else 'MISMATCH'} max_abs_err={_g(arg.max_abs_err)}"
            f" max_rel_err={_g(arg.max_rel_err)} max_ulp={_g(arg.max_ulp)}"
            + (f" (tolerance {arg.tolerance})" if getattr(arg, "tolerance", "") else "")
        )
    sizes = getattr(report, "sizes", None)
    if sizes:
        lines.append(f"sizes used: {json.dumps(sizes)}")
    return "\n".join(lines)


def _one_line_report(report: Any) -> str:
    status = getattr(report, "status", "failed")
    bad = [a for a in getattr(report, "arguments", None) or [] if not a.passed]
    if bad:
        return f"{status} on " + ", ".join(
            f"{a.name} (max_abs_err {_g(a.max_abs_err)})" for a in bad
        )
    message = (getattr(report, "message", "") or "").strip().splitlines()
    return f"{status}: {message[-1][:200]}" if message else status


# --------------------------------------------------------------------------------------------
# The budgeted fallback

Verifier = Callable[..., Any]  # verify_against_gfortran(kernel, generated, *, sizes, seed, device)


def _default_verifier() -> Verifier:
    from kernels.engine.verify import verify_against_gfortran

    return verify_against_gfortran


def llm_translate_kernel(
    kernel: ir.Kernel,
    result: KernelResult,
    *,
    chat: ChatClient,
    target: str = "cpu",
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    max_calls: int = MAX_CALLS_PER_KERNEL,
    verifier: Verifier | None = None,
    progress: ProgressCallback | None = None,
) -> KernelResult:
    """Ask the LLM for a port of one unsupported kernel, verify it, repair it, within the budget.

    Returns a copy of ``result``: ``verified`` with the code and error figures when an answer
    passed verification, else still ``unsupported`` with a diagnostic giving the reason. A
    provider error (bad key, rate limit, outage) ends the attempt with that reason too: one
    kernel's fallback failing must not fail the whole translation.
    """
    verify = verifier
    max_calls = max(1, min(int(max_calls), MAX_CALLS_PER_KERNEL))
    entry = entry_name(kernel)
    device = result.device if result.device in ("cpu", "gpu", "simulator") else "cpu"
    if target == "cpu":
        device = "cpu"
    messages = translation_messages(kernel, result, target=target)
    calls = 0
    tokens = 0
    last_problem = ""
    for call in range(1, max_calls + 1):
        if progress:
            progress(
                "generate",
                call - 1,
                max_calls,
                f"{kernel.name}: LLM fallback call {call}/{max_calls}",
            )
        try:
            reply = chat.complete(messages)
        except LlmError as exc:
            last_problem = f"{exc.kind}: {exc.message}"
            break
        calls += 1
        tokens += reply.total_tokens
        messages.append({"role": "assistant", "content": reply.content or ""})
        try:
            code = extract_python(reply.content, entry)
            check_module(code, entry)
        except AnswerRejected as exc:
            last_problem = f"malformed answer: {exc}"
            messages.append(repair_message(str(exc), entry=entry, calls_left=max_calls - call))
            continue
        generated = GeneratedCode(
            code=code,
            entry=entry,
            parallel_loops=count_parallel_loops(code),
            notes=[f"written by the Mistral LLM fallback ({chat.model}), call {call}"],
        )
        if progress:
            progress("verify", call - 1, max_calls, f"{kernel.name}: verifying LLM answer {call}")
        try:
            if verify is None:
                verify = _default_verifier()
            report = verify(kernel, generated, sizes=sizes, seed=seed, device=device)
        except SandboxUnavailable:
            raise  # nothing the model can repair: the answer cannot run here at all
        except (EngineError, ValueError) as exc:  # a plan the harness cannot build counts as failed
            report = _FailedReport(message=f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
        # Inconclusive (outputs match, but some loop never ran) is final too: another answer
        # cannot make the loop run; the sizes can.
        if getattr(report, "status", "failed") in ("verified", "inconclusive"):
            return _verified_result(
                result, generated, report, calls=calls, tokens=tokens, model=chat.model
            )
        text = _format_report(report)
        last_problem = _one_line_report(report)
        messages.append(repair_message(text, entry=entry, calls_left=max_calls - call))
    return _unsupported_result(
        result, kernel, calls=calls, tokens=tokens, budget=max_calls, problem=last_problem
    )


@dataclass
class _FailedReport:
    message: str
    status: str = "failed"
    arguments: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)


def _verified_result(
    result: KernelResult, generated: Any, report: Any, *, calls: int, tokens: int, model: str
) -> KernelResult:
    cov = getattr(report, "coverage", None)
    out = dataclasses.replace(
        result,
        status=report.status,
        coverage=cov.to_dict() if cov is not None else None,
        code=generated.code,
        entry=generated.entry,
        parallel_loops=generated.parallel_loops,
        max_abs_err=report.max_abs_err,
        max_rel_err=report.max_rel_err,
        max_ulp=report.max_ulp,
        arguments=list(report.arguments or []),
        sizes=dict(report.sizes or {}),
        device=getattr(report, "device", None) or result.device,
        llm_calls=result.llm_calls + calls,
        llm_tokens=result.llm_tokens + tokens,
        diagnostics=list(result.diagnostics),
        notes=list(result.notes)
        + [
            f"ported by the Mistral LLM fallback ({model}) in {calls} call"
            f"{'s' if calls != 1 else ''}; {report.status} against gfortran"
        ],
    )
    if report.status != "verified" and getattr(report, "message", ""):
        out.diagnostics.append(Diagnostic(result.line, 1, report.message))
    return out


def _unsupported_result(
    result: KernelResult,
    kernel: ir.Kernel,
    *,
    calls: int,
    tokens: int,
    budget: int,
    problem: str,
) -> KernelResult:
    if calls >= budget:
        reason = f"LLM fallback: no verified port within the budget of {budget} calls"
    else:
        reason = f"LLM fallback stopped after {calls} call{'s' if calls != 1 else ''}"
    if problem:
        reason += f" (last: {'; '.join(problem.splitlines())[:300]})"
    out = dataclasses.replace(
        result,
        status="unsupported",
        llm_calls=result.llm_calls + calls,
        llm_tokens=result.llm_tokens + tokens,
        diagnostics=list(result.diagnostics) + [Diagnostic(kernel.line or 1, 1, reason)],
        notes=list(result.notes) + [reason],
    )
    return out


LlmFallback = Callable[..., KernelResult]


def make_llm_fallback(
    config: LlmConfig,
    *,
    max_calls: int = MAX_CALLS_PER_KERNEL,
    verifier: Verifier | None = None,
    chat_factory: Callable[[LlmConfig], ChatClient] = MistralChat,
) -> LlmFallback:
    """The callable ``translate_source(llm_fallback=...)`` takes.

    Called as ``fallback(kernel=..., result=..., target=..., sizes=..., seed=...)`` for each kernel
    that came back ``unsupported``; anything else is handed back untouched.
    """

    def fallback(
        *,
        kernel: ir.Kernel,
        result: KernelResult,
        target: str = "cpu",
        sizes: dict[str, int] | None = None,
        seed: int = 0,
        progress: ProgressCallback | None = None,
        **_: Any,
    ) -> KernelResult:
        if result.status != "unsupported":
            return result
        return llm_translate_kernel(
            kernel,
            result,
            chat=chat_factory(config),
            target=target,
            sizes=sizes,
            seed=seed,
            max_calls=max_calls,
            verifier=verifier,
            progress=progress,
        )

    fallback.model = config.model  # type: ignore[attr-defined]
    return fallback


# --------------------------------------------------------------------------------------------
# ask_agent: bounded function calling over local tools

AGENT_SYSTEM_PROMPT = """\
You are the fortranspire assistant. fortranspire ports Fortran HPC kernels to numba (CPU) and
numba.cuda (GPU) and verifies every port against the original compiled with gfortran.
Use the tools to answer: analyse a source, translate it, verify it, profile it, or read an
earlier run from the tenant's history. Report only figures the tools returned (never invent a
verification result). Be concise; when you are done, answer in plain text without a tool call.
"""


@dataclass
class AgentTool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    run: Callable[[dict[str, Any]], Any]  # returns something JSON-serialisable
    summarize: Callable[[Any], str] | None = None

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass
class AgentResult:
    answer: str
    trace: list[dict[str, Any]]
    llm_calls: int
    llm_tokens: int
    stopped: str = "answered"  # 'answered' | 'max_steps'

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "trace": list(self.trace),
            "llm_calls": self.llm_calls,
            "llm_tokens": self.llm_tokens,
            "stopped": self.stopped,
        }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def _default_summary(value: Any) -> str:
    if isinstance(value, Mapping):
        if "error" in value:
            return f"error: {value.get('message') or value['error']}"
        keys = ", ".join(list(value)[:6])
        return f"returned {{{keys}}}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"returned {len(value)} item(s)"
    return _clip(str(value), 120)


def run_agent(
    chat: ChatClient,
    *,
    question: str,
    tools: Sequence[AgentTool],
    context: str = "",
    max_steps: int = DEFAULT_AGENT_STEPS,
    progress: ProgressCallback | None = None,
    trace: list[dict[str, Any]] | None = None,
) -> AgentResult:
    """Let the model call ``tools`` until it answers, for at most ``max_steps`` LLM calls.

    The last allowed call is made with ``tool_choice="none"`` so the model has to answer with
    what it has; the bound holds even against a model that keeps asking for tools. Provider
    errors (LlmError) propagate: the caller decides how to tell the user; pass ``trace`` to keep
    the tool calls made before such an error.
    """
    by_name = {t.name: t for t in tools}
    specs = [t.spec() for t in tools]
    user = question.strip()
    if context:
        user += "\n\n" + context.strip()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": AGENT_SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]
    trace = trace if trace is not None else []
    calls = 0
    tokens = 0
    max_steps = max(1, int(max_steps))
    for step in range(1, max_steps + 1):
        if progress:
            progress("agent", step - 1, max_steps, f"LLM step {step}/{max_steps}")
        last = step == max_steps
        reply = chat.complete(messages, tools=specs, tool_choice="none" if last else "auto")
        calls += 1
        tokens += reply.total_tokens
        if not reply.tool_calls:
            return AgentResult(reply.content.strip(), trace, calls, tokens)
        if last:
            break
        messages.append(reply.assistant_message())
        for tc in reply.tool_calls:
            output, summary, arguments = _run_tool(by_name, tc)
            trace.append({"tool": tc.name, "arguments": arguments, "summary": summary})
            if progress:
                progress("agent", step, max_steps, f"{tc.name}: {summary}")
            messages.append(
                {
                    "role": "tool",
                    "name": tc.name,
                    "tool_call_id": tc.id,
                    "content": _clip(json.dumps(output, default=str), MAX_TOOL_OUTPUT_CHARS),
                }
            )
    answer = reply.content.strip() or (
        f"I stopped after {max_steps} steps without a final answer; the trace shows what the "
        "tools returned so far."
    )
    return AgentResult(answer, trace, calls, tokens, stopped="max_steps")


def _run_tool(by_name: Mapping[str, AgentTool], tc: ToolCallRequest) -> tuple[Any, str, Any]:
    tool = by_name.get(tc.name)
    try:
        arguments = tc.parsed_arguments()
    except ValueError as exc:
        out = {"error": "bad_arguments", "message": f"arguments are not a JSON object: {exc}"}
        return out, f"error: {out['message']}", tc.arguments
    if tool is None:
        out = {"error": "unknown_tool", "message": f"no tool named {tc.name!r}"}
        return out, f"error: {out['message']}", arguments
    try:
        value = tool.run(arguments)
    except Exception as exc:  # any tool failure becomes an answer the model can read and react to
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        out = {"error": type(exc).__name__, "message": message}
        return out, f"error: {message}"[:300], arguments
    summary = (tool.summarize or _default_summary)(value)
    return value, summary, arguments
