"""Running the pipeline as its users do, on loopback: simulated cameras, its control API and metrics
read over HTTP, free ports, the soak, and the live page in a browser."""
