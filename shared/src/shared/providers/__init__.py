"""Upstream identity providers: one Protocol, one core OAuth2 flow, one module per type."""
