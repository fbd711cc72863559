"""byoc-vision trainer."""
