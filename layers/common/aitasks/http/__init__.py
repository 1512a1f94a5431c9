"""The HTTP edge: request and response models, RFC 9457 problems, and what handlers share."""
