"""Meta-architectures, registered by the name of their model.proto oneof field."""
