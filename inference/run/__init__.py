"""A run: its configuration, its directory (writer and reader), and the orchestration of jobs."""
