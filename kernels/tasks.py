"""Celery tasks: the same services, run by a worker. Arguments are plain JSON (a tenant slug, not
a Tenant) because they travel through the broker."""

from __future__ import annotations

from fortranspire_site.celery import app


@app.task(name="kernels.tasks.ping")
def ping() -> str:
    """Round-trip check for the broker and a worker."""
    return "pong"


def _translate(
    *,
    tenant_slug: str,
    source: str,
    target: str,
    channel: str,
    kernel: str | None,
    verify: bool,
    sizes: dict | None,
    seed: int,
    tool: str,
) -> dict:
    from kernels.services import kernel_translate
    from tenants.selectors import tenant_get

    tenant = tenant_get(slug=tenant_slug)
    run, result = kernel_translate(
        tenant=tenant,
        source=source,
        target=target,
        channel=channel,
        kernel=kernel,
        verify=verify,
        sizes=sizes,
        seed=seed,
        tool=tool,
    )
    return {**result.to_dict(), "run_id": str(run.id)}


@app.task(name="kernels.tasks.translate")
def translate(
    tenant_slug: str,
    source: str,
    *,
    channel: str = "api",
    kernel: str | None = None,
    verify: bool = True,
    sizes: dict | None = None,
    seed: int = 0,
    tool: str = "translate_kernel",
) -> dict:
    return _translate(
        tenant_slug=tenant_slug,
        source=source,
        target="cpu",
        channel=channel,
        kernel=kernel,
        verify=verify,
        sizes=sizes,
        seed=seed,
        tool=tool,
    )


@app.task(name="kernels.tasks.translate_gpu")
def translate_gpu(
    tenant_slug: str,
    source: str,
    *,
    channel: str = "api",
    kernel: str | None = None,
    verify: bool = True,
    sizes: dict | None = None,
    seed: int = 0,
    tool: str = "translate_kernel_gpu",
) -> dict:
    """Routed to the ``gpu`` queue (settings.CELERY_TASK_ROUTES) so only GPU nodes take it."""
    return _translate(
        tenant_slug=tenant_slug,
        source=source,
        target="gpu",
        channel=channel,
        kernel=kernel,
        verify=verify,
        sizes=sizes,
        seed=seed,
        tool=tool,
    )


@app.task(name="kernels.tasks.purge")
def purge() -> dict[str, int]:
    """Nightly retention purge (schedule it with celery beat or cron: `fortranspire purge`)."""
    from kernels.services import kernel_run_purge

    return kernel_run_purge()
