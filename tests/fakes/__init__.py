"""Local stand-ins for outside services, so the suite runs with no network."""
