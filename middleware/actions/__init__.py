"""The actions, one module per family, each a short list of steps: they read and write
through the ledger, the store and Genesys, and apply the pure rules of ``rules/`` between."""
