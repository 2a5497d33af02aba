"""The actions: each reads and writes through the ledger, the store and Genesys, and applies
the pure rules of ``rules/`` in between."""
