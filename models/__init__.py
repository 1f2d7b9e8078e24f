"""Reference models built on flowkit (PyramidFlow, CS-Flow) and the application around them."""
