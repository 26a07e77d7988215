"""Reports: every command writes a self-contained HTML file and a JSON sidecar with the same numbers."""
