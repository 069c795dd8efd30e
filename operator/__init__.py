"""labtune.operator: one folder per kind (builders and reconcile logic), the run loop they share, the
child builders, the controller machinery, and the one module that wires them to kopf."""
