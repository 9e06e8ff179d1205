"""tri24es: an event-sourced control plane for fleets of autonomous AI coding agents."""

__version__ = "0.1.0"
