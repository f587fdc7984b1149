"""Private helpers shared by every layer of rgflow: validation, progress, batch-means statistics."""
