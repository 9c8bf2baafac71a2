"""Synthetic studies: participants drawn from the analysis simulator, stored via the services."""
