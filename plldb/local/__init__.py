"""The developer-machine side: session, code resolution, workers and debuggers."""
