"""The least-privilege proof (issue 15): recorded AWS calls x deployments/iam policies, evaluated offline."""
