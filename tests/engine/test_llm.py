"""The Mistral fallback and agent loop, against a local fake of the chat-completions API.

The real ``mistralai`` SDK talks to tests/fakes/mistral_server.py over HTTP on 127.0.0.1, so
request building, parsing and error classes are the production ones; there is no network.
The fallback tests verify the fake's answers with the real gfortran harness in the sandbox.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from kernels.engine import ir, llm
from kernels.engine.report import Diagnostic, KernelResult
from tests.fakes.mistral_server import FakeMistral, error, raw, reply

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fortran" / "clamp_goto.f90"
SIZES = {"n": 37}

CORRECT = """Here is the port:
```python
import numba


@numba.njit(cache=False)
def clamp_goto(n, x):
    for i in range(n):
        if x[i] < 0.75:
            x[i] = 0.75
        if x[i] > 1.25:
            x[i] = 1.25
```
"""

WRONG = CORRECT.replace("0.75", "0.8")  # clamps to the wrong bound: a mismatch, not a crash

needs_gfortran = pytest.mark.skipif(
    shutil.which("gfortran") is None, reason="gfortran is not installed: cannot verify ports"
)


def clamp_kernel() -> ir.Kernel:
    """The IR the frontend gives for clamp_goto.f90: GOTO is left as an Unsupported marker."""
    source = FIXTURE.read_text()
    n = ir.Var("n")
    return ir.Kernel(
        name="clamp_goto",
        args=[
            ir.Arg("n", ir.INTEGER, "in"),
            ir.Arg("x", ir.REAL8, "inout", dims=[ir.Dim(ir.Const(1, ir.INTEGER), n)]),
        ],
        body=[ir.Unsupported("goto", line=10, text="if (i > n) goto 20")],
        locals={"i": ir.Decl("i", ir.INTEGER)},
        fortran_source=source,
        fortran_entry="clamp_goto",
        line=4,
        unsupported=[ir.Unsupported("goto", line=10, text="if (i > n) goto 20")],
    )


def unsupported_result() -> KernelResult:
    return KernelResult(
        name="clamp_goto",
        status="unsupported",
        device="cpu",
        line=4,
        diagnostics=[Diagnostic(10, 4, "GOTO is not supported")],
    )


def chat_for(fake: FakeMistral, **overrides) -> llm.MistralChat:
    config = llm.LlmConfig(
        api_key="sk-test-tenant", server_url=fake.url, allow_private_endpoint=True, **overrides
    )
    return llm.MistralChat(config, sleep=lambda s: None)


def fallback(fake: FakeMistral, **kw) -> KernelResult:
    return llm.llm_translate_kernel(
        clamp_kernel(), unsupported_result(), chat=chat_for(fake), sizes=SIZES, seed=0, **kw
    )


# --------------------------------------------------------------------------------------------
# Fallback: verified, repaired, exhausted, malformed


@needs_gfortran
def test_correct_first_answer_is_verified_with_one_llm_call():
    with FakeMistral([reply(CORRECT, prompt_tokens=300, completion_tokens=120)]) as fake:
        result = fallback(fake)
    assert result.status == "verified", result.diagnostics
    assert result.llm_calls == 1
    assert result.llm_tokens == 420
    assert "def clamp_goto" in result.code and result.entry == "clamp_goto"
    assert result.max_abs_err == 0.0
    assert any("LLM fallback" in note for note in result.notes)
    # What was sent: the Fortran, the diagnostics and the calling convention, with the key.
    sent = fake.requests[0]
    assert sent.authorization == "Bearer sk-test-tenant"
    prompt = sent.last_user_text
    assert "goto 20" in prompt and "GOTO is not supported" in prompt
    assert "numba.njit" in prompt and "clamp_goto(n, x)" in prompt
    assert sent.body["model"] == "codestral-latest"


@needs_gfortran
def test_wrong_answer_is_repaired_on_second_call_with_the_error_report():
    with FakeMistral([reply(WRONG), reply(CORRECT)]) as fake:
        result = fallback(fake)
    assert result.status == "verified"
    assert result.llm_calls == 2
    repair = fake.requests[1].last_user_text
    assert "mismatch" in repair.lower() and "x:" in repair
    # The model sees its own wrong answer before the report.
    roles = [m["role"] for m in fake.requests[1].messages]
    assert roles == ["system", "user", "assistant", "user"]


@needs_gfortran
def test_answer_that_crashes_in_the_sandbox_is_repaired_with_the_traceback():
    crash = reply("```python\ndef clamp_goto(n, x):\n    raise ValueError('boom in port')\n```")
    with FakeMistral([crash, reply(CORRECT)]) as fake:
        result = fallback(fake)
        repair = fake.requests[1].last_user_text
    assert "failed" in repair and "boom in port" in repair
    assert result.status == "verified" and result.llm_calls == 2


@needs_gfortran
def test_four_wrong_answers_exhaust_the_budget_and_leave_the_kernel_unsupported():
    with FakeMistral([reply(WRONG)] * 5) as fake:
        result = fallback(fake)
        assert len(fake.requests) == 4 and fake.remaining == 1  # the fifth is never asked for
    assert result.status == "unsupported"
    assert result.llm_calls == 4
    assert result.code == ""  # unverified LLM code is never handed out as a port
    reason = result.diagnostics[-1].message
    assert "budget of 4 calls" in reason and "mismatch" in reason


def test_answers_without_usable_code_count_against_the_budget_and_are_never_run():
    no_fence = reply("I think you should use a loop.")
    bad_syntax = reply("```python\ndef clamp_goto(n, x)\n    pass\n```")
    evil = reply("```python\nimport os\n\ndef clamp_goto(n, x):\n    os.system('id')\n```")
    wrong_name = reply("```python\ndef other(n, x):\n    pass\n```")
    calls = []

    def verifier(*a, **k):  # must never be reached: nothing here is worth verifying
        calls.append(a)
        raise AssertionError("verifier called on a rejected answer")

    with FakeMistral([no_fence, bad_syntax, evil, wrong_name]) as fake:
        result = fallback(fake, verifier=verifier)
        repairs = [r.last_user_text for r in fake.requests[1:]]
    assert result.status == "unsupported" and result.llm_calls == 4 and not calls
    assert "no ```python fenced code block" in repairs[0]
    assert "SyntaxError" in repairs[1]
    assert "import of `os` is not allowed" in repairs[2]
    assert "malformed answer" in result.diagnostics[-1].message
    assert "does not define the entry function `clamp_goto`" in result.diagnostics[-1].message


@needs_gfortran
def test_malformed_answer_then_correct_answer_is_verified():
    with FakeMistral([reply("Sorry, no code today."), reply(CORRECT)]) as fake:
        result = fallback(fake)
    assert result.status == "verified" and result.llm_calls == 2


CUDA_CORRECT = """```python
import numpy as np
from numba import cuda


@cuda.jit
def _clamp(x):
    i = cuda.grid(1)
    if i < x.shape[0]:
        if x[i] < 0.75:
            x[i] = 0.75
        if x[i] > 1.25:
            x[i] = 1.25


def clamp_goto(n, x):
    d_x = cuda.to_device(x)
    threads = 64
    _clamp[(n + threads - 1) // threads, threads](d_x)
    d_x.copy_to_host(x)
```"""


@needs_gfortran
def test_gpu_answer_is_verified_as_a_cuda_port_on_the_simulator():
    gpu_result = dataclasses.replace(unsupported_result(), device="simulator")
    with FakeMistral([reply(CUDA_CORRECT)]) as fake:
        result = llm.llm_translate_kernel(
            clamp_kernel(), gpu_result, chat=chat_for(fake), target="gpu", sizes=SIZES
        )
        assert "numba.cuda" in fake.requests[0].last_user_text
    assert result.status == "verified", result.diagnostics
    assert result.device == "simulator" and result.parallel_loops == 1


@needs_gfortran
def test_translate_source_hands_only_the_unsupported_kernel_to_the_fallback():
    from kernels.engine import translate_source

    source = FIXTURE.read_text()
    alone = translate_source(source, filename="clamp_goto.f90", sizes=SIZES)
    assert [(k.status, k.llm_calls) for k in alone.kernels] == [("unsupported", 0)]

    with FakeMistral([reply(CORRECT)]) as fake:
        fb = llm.make_llm_fallback(
            llm.LlmConfig(api_key="sk-t", server_url=fake.url, allow_private_endpoint=True)
        )
        result = translate_source(source, filename="clamp_goto.f90", sizes=SIZES, llm_fallback=fb)
        assert len(fake.requests) == 1
    data = result.to_dict()["kernels"][0]
    assert data["status"] == "verified" and data["llm_calls"] == 1
    assert data["max_abs_err"] == 0.0 and "def clamp_goto" in data["code"]
    assert result.ok


def test_fallback_hands_back_kernels_that_are_not_unsupported_without_calling_the_llm():
    done = KernelResult(name="k", status="verified", device="cpu", code="x")
    with FakeMistral([reply(CORRECT)]) as fake:
        fb = llm.make_llm_fallback(
            llm.LlmConfig(api_key="k", server_url=fake.url, allow_private_endpoint=True)
        )
        out = fb(kernel=clamp_kernel(), result=done, target="cpu", sizes=None, seed=0)
        assert not fake.requests
    assert out is done


def test_provider_error_during_fallback_leaves_the_kernel_unsupported_with_the_reason():
    with FakeMistral([error(401, "Unauthorized")]) as fake:
        result = fallback(fake)
    assert result.status == "unsupported"
    assert result.llm_calls == 0
    assert "llm_auth" in result.diagnostics[-1].message
    assert "rejected the API key" in result.diagnostics[-1].message


# --------------------------------------------------------------------------------------------
# Provider errors: clear, with bounded retries where a retry can help


def ask(chat: llm.MistralChat) -> llm.ChatReply:
    return chat.complete([{"role": "user", "content": "hi"}])


def test_401_is_not_retried_and_says_how_to_configure_the_key():
    with FakeMistral([error(401, "Unauthorized"), reply("never")]) as fake:
        with pytest.raises(llm.LlmAuthError) as exc:
            ask(chat_for(fake))
        assert len(fake.requests) == 1
    assert exc.value.status == 401
    assert "PUT /api/v1/llm/credential" in exc.value.message


def test_429_is_retried_after_the_advertised_retry_after():
    slept = []
    with FakeMistral([error(429, "slow down", headers={"Retry-After": "2"}), reply("ok")]) as fake:
        chat = llm.MistralChat(
            llm.LlmConfig(api_key="k", server_url=fake.url, allow_private_endpoint=True),
            sleep=slept.append,
        )
        out = ask(chat)
        assert len(fake.requests) == 2
    assert out.content == "ok" and slept == [2.0]
    assert chat.calls == 1  # a rejected attempt is not a billed call


def test_429_with_a_long_retry_after_is_reported_instead_of_waited_out():
    with FakeMistral([error(429, "quota", headers={"Retry-After": "120"})]) as fake:
        with pytest.raises(llm.LlmRateLimited) as exc:
            ask(chat_for(fake, max_retry_wait_s=10))
        assert len(fake.requests) == 1
    assert exc.value.retry_after == 120
    assert "429" in exc.value.message


def test_5xx_is_retried_a_bounded_number_of_times_then_reported():
    with FakeMistral([error(503, "overloaded")] * 5) as fake:
        with pytest.raises(llm.LlmUnavailable) as exc:
            ask(chat_for(fake, max_attempts=3))
        assert len(fake.requests) == 3
    assert "503" in exc.value.message and "overloaded" in exc.value.message


def test_5xx_followed_by_success_recovers():
    with FakeMistral([error(500), reply("fine")]) as fake:
        assert ask(chat_for(fake)).content == "fine"


def test_timeout_is_a_clear_error_after_bounded_attempts():
    with FakeMistral([reply("late", delay_s=1.5), reply("late", delay_s=1.5)]) as fake:
        with pytest.raises(llm.LlmTimeout) as exc:
            ask(chat_for(fake, timeout_s=0.3, max_attempts=2))
        assert len(fake.requests) == 2
    assert "did not answer within 0.3 s" in exc.value.message


def test_malformed_response_body_is_a_clear_bad_response_error():
    with FakeMistral([raw("{not json at all")]) as fake:
        with pytest.raises(llm.LlmBadResponse) as exc:
            ask(chat_for(fake))
    assert "not a chat completion" in exc.value.message


def test_unreachable_endpoint_is_reported_as_unavailable():
    with FakeMistral([]) as fake:
        url = fake.url
    with pytest.raises(llm.LlmUnavailable) as exc:
        ask(
            llm.MistralChat(
                llm.LlmConfig(
                    api_key="k", server_url=url, allow_private_endpoint=True, max_attempts=2
                ),
                sleep=lambda s: None,
            )
        )
    assert "cannot reach Mistral" in exc.value.message


# --------------------------------------------------------------------------------------------
# ask_agent loop


def agent_tools(log: list) -> list[llm.AgentTool]:
    def analyse(args):
        log.append(("analyse", args))
        return {"kernels": [{"name": "heat", "parallel_loops": 2}]}

    def translate(args):
        log.append(("translate", args))
        return {"kernels": [{"name": "heat", "status": "verified", "max_ulp": 1.0}]}

    def broken(args):
        raise RuntimeError("profiler exploded")

    obj = {"type": "object", "properties": {"target": {"type": "string"}}}
    return [
        llm.AgentTool("analyse", "find kernels and loops", obj, analyse),
        llm.AgentTool(
            "translate",
            "translate and verify",
            obj,
            translate,
            summarize=lambda v: f"{v['kernels'][0]['name']}: {v['kernels'][0]['status']}",
        ),
        llm.AgentTool("profile", "rank kernels by cost", obj, broken),
    ]


def test_agent_calls_two_tools_then_answers():
    log: list = []
    script = [
        reply(None, tool_calls=[("analyse", {})]),
        reply("", tool_calls=[("translate", {"target": "gpu"})]),
        reply(
            "heat ports to the GPU and verifies (max 1 ULP).", prompt_tokens=10, completion_tokens=5
        ),
    ]
    with FakeMistral(script) as fake:
        result = llm.run_agent(
            chat_for(fake), question="Can heat run on a GPU?", tools=agent_tools(log)
        )
        requests = fake.requests
    assert result.answer.startswith("heat ports to the GPU")
    assert result.llm_calls == 3
    assert result.llm_tokens == 150 + 150 + 15
    assert [t["tool"] for t in result.trace] == ["analyse", "translate"]
    assert result.trace[1] == {
        "tool": "translate",
        "arguments": {"target": "gpu"},
        "summary": "heat: verified",
    }
    assert log == [("analyse", {}), ("translate", {"target": "gpu"})]
    # The tools were offered, and each tool result went back tied to its call id.
    assert {t["function"]["name"] for t in requests[0].body["tools"]} == {
        "analyse",
        "translate",
        "profile",
    }
    tool_msgs = [m for m in requests[2].messages if m["role"] == "tool"]
    assert [m["name"] for m in tool_msgs] == ["analyse", "translate"]
    assert json.loads(tool_msgs[1]["content"])["kernels"][0]["status"] == "verified"
    assistant = [m for m in requests[2].messages if m["role"] == "assistant"]
    assert assistant[0]["tool_calls"][0]["id"] == tool_msgs[0]["tool_call_id"]


def test_agent_is_bounded_even_when_the_model_keeps_calling_tools():
    log: list = []
    script = [reply("", tool_calls=[("analyse", {})])] * 3 + [reply("best effort answer")]
    with FakeMistral(script) as fake:
        result = llm.run_agent(
            chat_for(fake), question="loop forever", tools=agent_tools(log), max_steps=4
        )
        last_request = fake.requests[-1].body
    assert result.llm_calls == 4 and len(result.trace) == 3
    assert last_request["tool_choice"] == "none"  # the last step must answer
    assert result.answer == "best effort answer"


def test_agent_tool_failures_and_unknown_tools_go_back_to_the_model():
    script = [
        reply("", tool_calls=[("profile", {}), ("rm_rf", {})]),
        reply("The profiler failed."),
    ]
    with FakeMistral(script) as fake:
        result = llm.run_agent(chat_for(fake), question="profile it", tools=agent_tools([]))
        tool_msgs = [m for m in fake.requests[1].messages if m["role"] == "tool"]
    assert result.trace[0]["summary"] == "error: profiler exploded"
    assert "no tool named 'rm_rf'" in result.trace[1]["summary"]
    assert json.loads(tool_msgs[0]["content"])["error"] == "RuntimeError"


def test_agent_propagates_provider_errors():
    with FakeMistral([error(401)]) as fake:
        with pytest.raises(llm.LlmAuthError):
            llm.run_agent(chat_for(fake), question="hi", tools=agent_tools([]))


# --------------------------------------------------------------------------------------------
# Reading answers


def test_gpu_prompt_asks_for_cuda_kernels_and_a_host_driver():
    messages = llm.translation_messages(clamp_kernel(), unsupported_result(), target="gpu")
    prompt = messages[-1]["content"]
    assert "@cuda.jit" in prompt and "host driver function `clamp_goto(n, x)`" in prompt
    assert "x: real(8) array (1:n), numpy float64 order='F', intent(inout)" in prompt


def test_endpoint_override_with_a_v1_suffix_reaches_the_same_route():
    with FakeMistral([reply("ok")]) as fake:
        chat = llm.MistralChat(
            llm.LlmConfig(api_key="k", server_url=fake.url + "/v1/", allow_private_endpoint=True)
        )
        assert ask(chat).content == "ok"
        assert fake.requests[0].path == "/v1/chat/completions"


def test_extract_python_prefers_the_block_that_defines_the_entry():
    text = "```python\nimport numba\n```\nthen\n```py\ndef k(a):\n    return a\n```"
    assert llm.extract_python(text, "k").startswith("def k(a)")


def test_check_module_refuses_dunder_escapes_and_dynamic_code():
    with pytest.raises(llm.AnswerRejected) as exc:
        llm.check_module("def k():\n    return ().__class__.__bases__\n", "k")
    assert "__class__" in str(exc.value)
    with pytest.raises(llm.AnswerRejected):
        llm.check_module("def k():\n    eval('1')\n", "k")
