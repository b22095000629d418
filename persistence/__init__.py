"""Durable store of one account: snapshots, executions, intents, closed trades, reports."""
