"""FastAPI application (thin: validate, store, enqueue)."""
