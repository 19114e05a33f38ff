"""gunicorn settings for production: ``gunicorn wsgi:app`` reads this file.

Sync workers, two per core unless ``WEB_CONCURRENCY`` says otherwise; put a reverse proxy
(nginx, a load balancer) in front for slow clients and TLS.
"""

import multiprocessing
import os

bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
worker_class = "sync"
backlog = 2048
timeout = 30
graceful_timeout = 10
# Recycle a worker now and then, so slow leaks cannot grow without bound.
max_requests = 20000
max_requests_jitter = 2000
