"""The ``outputSchema`` of every MCP tool: what its ``structuredContent`` holds.

The translate tools return the CLI JSON shape (DESIGN.md) plus ``run_id``. Objects stay open
(no ``additionalProperties: false``): the engine adds detail fields over time, and a client that
validates the result (the mcp SDK does) must not reject a newer server.
"""

from __future__ import annotations

from typing import Any

NUMBER_OR_NULL = {"type": ["number", "null"]}
RUN_ID = {"type": "string", "description": "KernelRun id, for get_kernel_run."}

KERNEL_STATUSES = ["verified", "inconclusive", "translated", "mismatch", "unsupported", "failed"]

DIAGNOSTIC = {
    "type": "object",
    "properties": {
        "line": {"type": ["integer", "null"]},
        "column": {"type": ["integer", "null"]},
        "message": {"type": "string"},
    },
    "required": ["message"],
}

TRANSLATED_KERNEL = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "file": {"type": "string"},
        "status": {
            "type": "string",
            "enum": KERNEL_STATUSES,
            "description": "verified requires every DO loop to have run in the reference; "
            "inconclusive: a loop never ran at the sizes tried.",
        },
        "device": {"type": "string", "enum": ["cpu", "gpu", "simulator"]},
        "max_abs_err": NUMBER_OR_NULL,
        "max_rel_err": NUMBER_OR_NULL,
        "max_ulp": NUMBER_OR_NULL,
        "llm_calls": {"type": "integer", "minimum": 0},
        "parallel_loops": {"type": "integer", "minimum": 0},
        "code": {"type": "string", "description": "The generated Python module."},
        "diagnostics": {"type": "array", "items": DIAGNOSTIC},
        "coverage": {"type": ["object", "null"], "description": "null without verification"},
        "timings_ms": {"type": "object"},
        "cached": {"type": "boolean"},
        "gpu_model": {"type": ["object", "null"]},
    },
    "required": ["name", "status", "device", "llm_calls", "parallel_loops", "code", "diagnostics"],
}

TRANSLATION = {
    "type": "object",
    "properties": {
        "file": {"type": "string"},
        "target": {"type": "string", "enum": ["cpu", "gpu"]},
        "kernels": {"type": "array", "items": TRANSLATED_KERNEL},
        "run_id": RUN_ID,
    },
    "required": ["file", "target", "kernels", "run_id"],
}

PROFILED_KERNEL = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "line": {"type": "integer"},
        "rank": {"type": "integer"},
        "share": {"type": "number", "description": "Estimated share of the run time (0..1)."},
        "flops": {"type": ["integer", "null"]},
        "bytes": {"type": ["integer", "null"]},
        "intensity": NUMBER_OR_NULL,
        "estimated_s": NUMBER_OR_NULL,
        "parallel": {"type": "boolean"},
        "bound": {"type": "string"},
        "reason": {"type": "string"},
    },
    "required": ["name"],
}

PROFILE = {
    "type": "object",
    "properties": {
        "file": {"type": "string"},
        "measured": {"type": "boolean"},
        "kernels": {"type": "array", "items": PROFILED_KERNEL},
        "machine": {"type": "object"},
        "run_id": RUN_ID,
    },
    "required": ["kernels", "run_id"],
}

AGENT_ANSWER = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "run_id": RUN_ID,
    },
    "required": ["run_id"],
}

RUN_SUMMARY = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "channel": {"type": "string"},
        "tool": {"type": "string"},
        "target": {"type": "string"},
        "kernel_names": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "string"},
        "duration_ms": {"type": ["integer", "null"]},
        "llm_calls": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
    },
    "required": ["id", "created_at", "status"],
}

RUN_LIST = {
    "type": "object",
    "properties": {
        "runs": {"type": "array", "items": RUN_SUMMARY},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "count": {"type": "integer"},
    },
    "required": ["runs", "limit", "offset", "count"],
}

RUN_DETAIL = {
    **RUN_SUMMARY,
    "properties": {
        **RUN_SUMMARY["properties"],
        "source": {"type": "string"},
        "generated_code": {"type": "string"},
        "report": {"type": "object"},
    },
}

OUTPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "translate_kernel": TRANSLATION,
    "translate_kernel_gpu": TRANSLATION,
    "profile_kernels": PROFILE,
    "ask_agent": AGENT_ANSWER,
    "list_kernel_runs": RUN_LIST,
    "get_kernel_run": RUN_DETAIL,
}
