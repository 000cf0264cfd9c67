"""The demo: a simulated fleet of agents governed by a real worker on a real broker."""
