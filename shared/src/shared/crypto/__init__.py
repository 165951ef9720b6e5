"""Encryption at rest (AES-GCM keyring) and opaque token generation."""
