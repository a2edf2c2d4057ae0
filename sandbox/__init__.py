"""Sandbox and test tooling: never imported by product code."""
