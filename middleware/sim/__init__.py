"""A Genesys Cloud Platform API simulator for the demo run and the tests (see ``app.py``)."""
