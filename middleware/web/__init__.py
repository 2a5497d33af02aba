"""The HTTP edge and the files generated from ``schemas/``: no business rule."""
