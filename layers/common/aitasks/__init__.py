"""aitasks: asynchronous AI tasks on AWS serverless."""
