"""byoc-vision model server: artifact -> runtime -> decode / predict / encode -> HTTP."""
