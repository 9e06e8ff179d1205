"""What comes in from outside: task files, the legacy spend file, agent output."""
