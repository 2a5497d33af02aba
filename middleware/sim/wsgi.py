"""Gunicorn entry point: ``gunicorn -w 1 -k gthread --threads 8 middleware.sim.wsgi:app``.

One worker only, because the simulator keeps its state in memory. The only place in the
simulator that reads the environment (through ``SimConfig``).
"""

import os

from middleware.clock import SystemClock
from middleware.config import SimConfig
from middleware.sim.app import create_sim_app, load_org

_config = SimConfig.from_env(os.environ)
app = create_sim_app(
    load_org(_config.org_file),
    clock=SystemClock(),
    rate_limit_per_min=_config.rate_limit_per_min,
    token_ttl_s=_config.token_ttl_s,
    client_id=_config.client_id,
    client_secret=_config.client_secret,
)
