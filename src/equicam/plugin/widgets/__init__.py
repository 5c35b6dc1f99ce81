"""Dock widgets of the plugin, one per file."""
