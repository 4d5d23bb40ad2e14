"""Migration revisions, oldest first. Revisions only add: they never drop a table."""
