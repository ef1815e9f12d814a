"""Hand-written alternatives the gateway is measured against."""
