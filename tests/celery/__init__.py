"""The Celery glue: DatabaseTask in-process, and in real workers on Redis and RabbitMQ."""
