"""The simulator's whole in-memory state behind one lock, and how it resets to the seed."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

from middleware.clock import Clock
from middleware.sim.callbacks import CallbackLedger
from middleware.sim.fidelity import Recorder
from middleware.sim.integrations import IntegrationStore
from middleware.sim.models import ModelCatalog
from middleware.sim.org import Org, build_org
from middleware.sim.traffic import FaultPlan, Stats, TokenBucket, TokenStore


class Simulator:
    """Org, callbacks, tokens, rate bucket, faults and counters; hold ``lock`` to touch them."""

    def __init__(
        self,
        seed: Mapping[str, Any],
        *,
        clock: Clock,
        catalog: ModelCatalog,
        rate_limit_per_min: int,
        token_ttl_s: int,
        client_id: str,
        client_secret: str,
    ) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.catalog = catalog
        self.token_ttl_s = token_ttl_s
        self.client_id = client_id
        self.client_secret = client_secret
        self._seed = copy.deepcopy(dict(seed))
        self._rate_limit_per_min = rate_limit_per_min
        self.org: Org = build_org(self._seed, clock.now())
        self.callbacks = CallbackLedger()
        self.tokens = TokenStore()
        self.bucket = TokenBucket(rate_limit_per_min)
        self.faults = FaultPlan()
        self.stats = Stats()
        self.schedule_search_status = "Complete"
        self.integrations = IntegrationStore()
        self.processing_searches = 0
        self.wfm_download = False
        self.downloads: dict[str, Any] = {}
        # Kept across resets: the verdicts cover a whole test run.
        self.fidelity = Recorder()

    def reset(self) -> None:
        """Back to a fresh start: the seed org (relative days re-read now), nothing else."""
        self.org = build_org(self._seed, self.clock.now())
        self.callbacks.clear()
        self.tokens.expire_all()
        self.bucket.set_limit(self._rate_limit_per_min)
        self.faults.current = None
        self.stats = Stats()
        self.schedule_search_status = "Complete"
        self.integrations.clear()
        self.processing_searches = 0
        self.wfm_download = False
        self.downloads.clear()
