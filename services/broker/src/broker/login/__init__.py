"""Signing users in through an upstream provider, and what a signed-in user does with it.

Logins in flight, the callback flow, identity (users and linked profiles), linking and
unlinking, the browser-session cookie. Imports ``broker.oauth`` and ``broker.http`` only.
"""
