"""Feature extractors, one module per backbone family, registered by name."""
