"""The service against a real Redis, the simulator, gunicorn and faults."""
