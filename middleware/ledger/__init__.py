"""A callback's life: its record and states, and the guarded transitions that change them."""
