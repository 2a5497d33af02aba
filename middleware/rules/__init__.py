"""SPEC §4 as pure code: numbers, time and calling hours; no falcon, redis or requests."""
