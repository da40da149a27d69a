"""ninja router for the tenant's LLM credential and LLM usage (mounted at /api/v1/llm)."""

from ninja import Router

router = Router(tags=["llm"])
