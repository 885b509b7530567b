"""thoughts stage."""
