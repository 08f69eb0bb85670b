"""The Kubernetes driver: pods, the Service and the claim for each job, through kopf and the official client."""
