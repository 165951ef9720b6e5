"""Database plumbing: engine factory, declarative base, portable column types."""
