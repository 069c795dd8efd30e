"""labtune.operator: kopf handlers, builders of child objects, status and metrics."""
