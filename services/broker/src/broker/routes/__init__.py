"""HTTP endpoints, one module per endpoint group."""
