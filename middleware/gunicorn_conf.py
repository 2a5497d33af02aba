"""gunicorn settings shipped with the service (Procfile ``web``); the bind comes from PORT.

gthread keeps keep-alive connections and lets a worker wait on Redis or Genesys without
blocking its siblings. The worker count comes from the command line (Procfile:
``WEB_CONCURRENCY``, default 2, one per core we size for). ``timeout`` sits
well above REQUEST_DEADLINE_MS so only a truly stuck worker is killed. Workers are recycled
rarely and at staggered points: a restart costs a latency spike (seen at 200-300 ms p99 in
the benchmark when it happened every few seconds).
Every line gunicorn writes is JSON, formatted like the service's own (``logconfig_dict``).
"""

from middleware.logs import GUNICORN_LOGCONFIG

logconfig_dict = GUNICORN_LOGCONFIG
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 200_000
max_requests_jitter = 20_000
accesslog = None
