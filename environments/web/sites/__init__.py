"""Bundled websites for multi-step web tasks, served on loopback with per-episode state."""
