"""WSGI entry point for gunicorn: configuration from the environment, then ``create_app``."""

import os

from middleware.app import create_app
from middleware.clock import SystemClock
from middleware.config import Config
from middleware.genesys.client import new_session
from middleware.logs import configure_logging
from middleware.store import connect

config = Config.from_env(os.environ)
configure_logging(config.log_level)
app = create_app(config, redis_client=connect(config.redis_url, config.redis_timeout_s),
                 http=new_session(), clock=SystemClock())
