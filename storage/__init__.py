"""What persists and queries runs, steps and attempts."""
