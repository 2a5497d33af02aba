"""The actions, one module per family, each a short list of steps over rules/, ledger/ and
genesys/."""
