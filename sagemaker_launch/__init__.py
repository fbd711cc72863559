"""Push the byoc-vision images to ECR and launch SageMaker training, tuning, endpoints and batch jobs."""
