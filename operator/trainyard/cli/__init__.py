"""The command-line client: `trainyard run|submit|get|describe|logs|delete|suspend|resume|operator|crd`."""

from .app import app, main

__all__ = ["app", "main"]
