"""The background worker (Procfile ``worker``): its loop; the duties live beside their rules."""
