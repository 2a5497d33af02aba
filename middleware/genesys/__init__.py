"""Genesys Cloud and nothing else: every URL, shape, timeout and error mapping."""
