"""kopf handlers, one module per kind; each module's `register` binds them to a registry."""
