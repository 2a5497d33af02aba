"""Consent-checked, agent-owned Genesys Cloud callbacks behind Architect data actions."""

__version__ = "0.1.0"
