"""The demo's example app: communications sent, preferences and engagement metrics."""
