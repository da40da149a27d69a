"""Celery app for scale-out: workers consume translate jobs from Redis (GPU nodes: queue ``gpu``).

Without REDIS_URL the settings make tasks eager, so the same code runs in-process.
Worker: ``REDIS_URL=redis://... celery -A fortranspire_site.celery worker -Q celery,gpu``.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")

app = Celery("fortranspire")
# CELERY_* settings: broker/result backend from REDIS_URL, eager when it is unset, GPU routing.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["kernels"])
