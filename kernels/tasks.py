"""Celery tasks: the same services, run by a worker. Arguments are plain JSON (a tenant slug, not
a Tenant) because they travel through the broker."""

from __future__ import annotations

from fortranspire_site.celery import app


@app.task(name="kernels.tasks.ping")
def ping() -> str:
    """Round-trip check for the broker and a worker."""
    return "pong"


def _translate(tenant_slug: str, source: str, *, target: str, tool: str, **options) -> dict:
    """Runs kernels.services.kernel_translate for the tenant; options are its keyword arguments
    (channel, kernel, verify, sizes, seed), all plain JSON."""
    from kernels.services import kernel_translate
    from tenants.selectors import tenant_get

    options.setdefault("channel", "api")
    run, result = kernel_translate(
        tenant=tenant_get(slug=tenant_slug), source=source, target=target, tool=tool, **options
    )
    return {**result.to_dict(), "run_id": str(run.id)}


@app.task(name="kernels.tasks.translate")
def translate(tenant_slug: str, source: str, *, tool: str = "translate_kernel", **options) -> dict:
    return _translate(tenant_slug, source, target="cpu", tool=tool, **options)


@app.task(name="kernels.tasks.translate_gpu")
def translate_gpu(
    tenant_slug: str, source: str, *, tool: str = "translate_kernel_gpu", **options
) -> dict:
    """Routed to the ``gpu`` queue (settings.CELERY_TASK_ROUTES) so only GPU nodes take it."""
    return _translate(tenant_slug, source, target="gpu", tool=tool, **options)


@app.task(name="kernels.tasks.purge")
def purge() -> dict[str, int]:
    """Nightly retention purge (schedule it with celery beat or cron: `fortranspire purge`)."""
    from kernels.services import kernel_run_purge

    return kernel_run_purge()
