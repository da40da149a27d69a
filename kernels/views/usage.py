"""Dashboard: how the workspace uses the service: runs per day, verified share, median latency,
LLM calls per kernel (histogram) and the alert for kernels that needed more than 6 calls."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from kernels import selectors
from kernels.charts import bar_chart
from kernels.llm_usage import ALERT_THRESHOLD, llm_usage_summary
from tenants.access import member_required

PERIODS = (7, 30, 90)
TOP_KERNELS = 12


@member_required
@never_cache
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    if days not in PERIODS:
        days = 30
    stats = selectors.kernel_run_stats(tenant=request.tenant, days=days)
    llm = llm_usage_summary(tenant=request.tenant, days=days)
    top = sorted(
        (k for k in llm.kernels.values() if k.llm_calls),
        key=lambda k: (-k.llm_calls, k.kernel),
    )[:TOP_KERNELS]
    charts = {
        "per_day": bar_chart(
            title=f"Runs per day, last {days} days",
            labels=[d.strftime("%m-%d") for d, _ in stats.runs_per_day],
            values=[n for _, n in stats.runs_per_day],
            width=1080,
            max_labels=15,
        ),
        "histogram": bar_chart(
            title="Kernel translations by number of LLM calls (0 = deterministic pipeline)",
            labels=list(llm.histogram),
            values=list(llm.histogram.values()),
            width=500,
        ),
        "top": bar_chart(
            title=f"LLM calls per kernel (red: more than {ALERT_THRESHOLD})",
            labels=[k.kernel for k in top],
            values=[k.llm_calls for k in top],
            highlight={i for i, k in enumerate(top) if k.alert},
            width=500,
        ),
    }
    return render(
        request,
        "dashboard/usage.html",
        {
            "days": days,
            "periods": PERIODS,
            "stats": stats,
            "llm": llm,
            "alerts": llm.alerts,
            "threshold": ALERT_THRESHOLD,
            "top": top,
            "charts": charts,
            "nav": "usage",
        },
    )
