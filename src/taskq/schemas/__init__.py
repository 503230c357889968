"""Wire schemas shared by the intake, the worker, the providers and the webhooks."""
