"""Celery app for scale-out: with REDIS_URL every job runs on a worker (kernels.tasks.run_job).

Worker: ``REDIS_URL=redis://... celery -A fortranspire_site.celery worker -Q cpu,gpu``
(GPU nodes: ``-Q gpu``). Settings (CELERY_* in settings.py): acks_late, reject on worker
lost, prefetch 1, and the broker's visibility timeout after which an unacknowledged job of a
dead worker is delivered again.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")

app = Celery("fortranspire")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["kernels"])
