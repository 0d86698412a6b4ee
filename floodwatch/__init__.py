"""floodwatch: DDoS detection and mitigation agent."""
__version__ = "0.1.0"
